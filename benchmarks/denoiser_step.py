"""One denoiser step — the tiny SD UNet (CFG batch 2) or the digits DiT (CFG batch 20) —
in edgegen's CPU artifact vs torch eager vs onnxruntime, measured in one run.

    python benchmarks/denoiser_step.py --model tiny-sd|digits [--runs 30] [--threads 2]

Prints median latencies with ratios to torch and writes benchmarks/results/denoiser_step_<model>.json.
Builds are cached under .cache/bench/.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import onnx_session, print_table, time_call, write_json  # noqa: E402


def _model(name: str, cache: Path):
    """(pipeline folder, denoiser component name, function module -> captured torch wrapper)."""
    from edgegen.converters import capture

    if name == "tiny-sd":
        from diffusers import UNet2DConditionModel

        from edgegen.testing import make_tiny_sd_pipeline

        folder = cache / "tiny-sd"
        if not (folder / "model_index.json").exists():
            make_tiny_sd_pipeline(folder)
        return folder, "unet", lambda x: capture.unet2d_condition(
            UNet2DConditionModel.from_pretrained(folder / "unet").eval(), *x)
    from diffusers import DiTTransformer2DModel

    from edgegen.digits import example_dir

    folder = example_dir() / "pipeline"
    return folder, "transformer", lambda x: capture.dit_transformer(
        DiTTransformer2DModel.from_pretrained(folder / "transformer").float().eval(), *x)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", choices=["tiny-sd", "digits"], default="tiny-sd")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", default=".cache/bench")
    args = parser.parse_args()

    import torch

    import edgegen
    from edgegen.core import Artifact

    torch.set_num_threads(args.threads)
    cache = Path(args.cache)
    folder, component, wrap = _model(args.model, cache)
    art_dir = cache / f"{args.model}-cpu"
    build = None
    if not (art_dir / "manifest.json").exists():
        report = edgegen.build(folder, art_dir, target="cpu")
        build = {"seconds": round(report.seconds, 1), "bytes": report.bytes}
    art = Artifact.open(art_dir)
    specs = art.component(component).inputs
    rng = np.random.default_rng(0)
    inputs = {}
    for s in specs:
        if s.name == "timestep":
            inputs[s.name] = np.full(s.shape, 500.0, np.float32)
        elif s.dtype == "int32":
            inputs[s.name] = (np.arange(int(np.prod(s.shape))) % 10).astype(np.int32).reshape(s.shape)
        else:
            inputs[s.name] = rng.standard_normal(s.shape, dtype=np.float32)

    rows = []
    t0 = time.perf_counter()
    session = edgegen.runtimes.load_component(art, component, threads=args.threads)
    load_ms = (time.perf_counter() - t0) * 1000
    out_art = list(session.run(**inputs).values())[0]
    rows.append({"name": "edgegen cpu (tvm_vm)", **time_call(lambda: session.run(**inputs), runs=args.runs)})

    cap = wrap(list(inputs.values()))
    targs = [torch.from_numpy(v) for v in inputs.values()]

    def torch_step():
        with torch.no_grad():
            return cap.module(*targs)

    out_torch = torch_step().numpy()
    rows.append({"name": "torch eager", **time_call(torch_step, runs=args.runs)})
    with tempfile.TemporaryDirectory() as tmp:
        sess = onnx_session(cap, Path(tmp) / "model.onnx", args.threads)
        out_ort = sess.run(None, inputs)[0]
        rows.append({"name": "onnxruntime cpu", **time_call(lambda: sess.run(None, inputs), runs=args.runs)})

    print(f"{args.model} {component} step, inputs {[[s.name, list(s.shape)] for s in specs]}, "
          f"threads {args.threads}")
    print_table(rows, "torch eager")
    agreement = {"edgegen_vs_torch_psnr_db": round(edgegen.core.psnr(out_torch, out_art), 1),
                 "onnxruntime_vs_torch_psnr_db": round(edgegen.core.psnr(out_torch, out_ort), 1)}
    print(agreement)
    path = write_json(f"denoiser_step_{args.model}", {
        "benchmark": f"{args.model} {component} step", "threads": args.threads, "rows": rows,
        "artifact_load_ms": round(load_ms, 1), "build": build, "agreement": agreement,
        "tvm_target": art.manifest["target"]["tvm_target"]})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
