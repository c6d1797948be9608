"""One UNet step (classifier-free guidance, batch 2) of the tiny pipeline:
edgegen's CPU artifact vs torch eager vs onnxruntime, measured in one run.

    python benchmarks/unet_step.py [--runs 30] [--threads 2]

Prints a table of median latencies with ratios to torch and writes
benchmarks/results/unet_step.json. The build is cached under .cache/.
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


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", default=".cache")
    args = parser.parse_args()

    import torch

    import edgegen
    from edgegen.core import Artifact
    from edgegen.testing import make_tiny_sd_pipeline

    torch.set_num_threads(args.threads)
    cache = Path(args.cache)
    model_dir, art_dir = cache / "tiny-sd", cache / "tiny-sd-cpu"
    if not (model_dir / "model_index.json").exists():
        make_tiny_sd_pipeline(model_dir)
    build = None
    if not (art_dir / "manifest.json").exists():
        report = edgegen.build(model_dir, art_dir, target="cpu")
        build = {"seconds": report.seconds, "bytes": report.bytes}
    art = Artifact.open(art_dir)
    spec = {s.name: s for s in art.component("unet").inputs}
    rng = np.random.default_rng(0)
    inputs = {n: rng.standard_normal(s.shape, dtype=np.float32) for n, s in spec.items()}
    inputs["timestep"] = np.full(spec["timestep"].shape, 500.0, np.float32)

    rows = []
    t0 = time.perf_counter()
    session = edgegen.runtimes.load_component(art, "unet")
    load_ms = (time.perf_counter() - t0) * 1000
    out_art = session.run(**inputs)["out_sample"]
    rows.append({"name": "edgegen cpu (tvm_vm)", **time_call(lambda: session.run(**inputs), runs=args.runs)})

    from diffusers import UNet2DConditionModel

    from edgegen.converters.capture import unet2d_condition

    unet = UNet2DConditionModel.from_pretrained(model_dir / "unet").eval()
    cap = unet2d_condition(unet, inputs["sample"], inputs["timestep"], inputs["encoder_hidden_states"])
    targs = [torch.from_numpy(v) for v in inputs.values()]

    def torch_step():
        with torch.no_grad():
            return cap.module(*targs)

    out_torch = torch_step().numpy()
    rows.append({"name": "torch eager", **time_call(torch_step, runs=args.runs)})

    with tempfile.TemporaryDirectory() as tmp:
        sess = onnx_session(cap.module, inputs, Path(tmp) / "unet.onnx", args.threads)
        out_ort = sess.run(None, inputs)[0]
        rows.append({"name": "onnxruntime cpu", **time_call(lambda: sess.run(None, inputs), runs=args.runs)})

    print(f"tiny UNet step, batch 2, inputs {[list(s.shape) for s in spec.values()]}, threads {args.threads}")
    print_table(rows, "torch eager")
    agreement = {"edgegen_vs_torch_psnr_db": edgegen.core.psnr(out_torch, out_art),
                 "onnxruntime_vs_torch_psnr_db": edgegen.core.psnr(out_torch, out_ort)}
    print({k: round(v, 1) for k, v in agreement.items()})
    path = write_json("unet_step", {"benchmark": "tiny UNet step", "threads": args.threads, "rows": rows,
                                    "artifact_load_ms": load_ms, "build": build, "agreement": agreement,
                                    "tvm_target": art.manifest["target"]["tvm_target"]})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
