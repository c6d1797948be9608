"""Quantization schemes on a Stable Diffusion 1.5-shaped UNet (real config, random weights): bits per
weight, artifact size, and CPU latency of one UNet step, against float32 and against onnxruntime's own
int8 (dynamic, MatMul) and int4 (MatMulNBits) quantization of the same model, in one run.

    python benchmarks/quant.py [--latent 16] [--runs 3] [--schemes fp16,w8,w4g32,...] [--shape sd14|tiny]

The UNet is SD 1.4's, whose configuration SD 1.5 shares (860M parameters). Sizes do not depend on
the latent size; latency does: --latent 64 is 512x512 (one fp32 step takes minutes on 2 cores),
the default 16 (128x128) keeps the whole run near half an hour. w8a8 calibrates its activation
ranges on the example inputs here (random weights make real prompts meaningless). Writes
benchmarks/results/quant.json.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import time_call, write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCHEMES = ("fp16", "w8", "w4g32", "w4g128", "pal4", "ternary", "w8a8")


def unet_capture(shape: str, latent: int):
    import torch
    from diffusers import UNet2DConditionModel

    from edgegen.converters import capture
    from edgegen.testing import make_tiny_sd_pipeline

    source = ROOT / ".cache" / ("sd14-random" if shape == "sd14" else "tiny-sd")
    if not (source / "model_index.json").is_file():
        make_tiny_sd_pipeline(source, shape=shape)
    unet = UNet2DConditionModel.from_pretrained(source / "unet", torch_dtype=torch.float32).eval()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, unet.config.in_channels, latent, latent), dtype=np.float32)
    emb = rng.standard_normal((2, 77, unet.config.cross_attention_dim), dtype=np.float32)
    return capture.unet2d_condition(unet, x, np.array([500.0, 500.0], np.float32), emb)


def tvm_row(name: str, lowered, cap, scheme, tvm_target: dict, runs: int, workdir: Path, reference) -> dict:
    import tvm
    from tvm import relax

    from edgegen.converters import lower, quantize
    from edgegen.core import psnr, safetensors_io

    t0 = time.perf_counter()
    info = {}
    if scheme is not None:
        calibration = [cap.inputs] if scheme.activations else None
        lowered, info = quantize.apply(lowered, scheme, tvm_target, calibration)
    executable = lower.compile_module(lowered.module, tvm_target)
    lib, weights = workdir / f"{name}.so", workdir / f"{name}.safetensors"
    executable.export_library(str(lib))
    safetensors_io.save(lowered.weights, weights)
    build_s = time.perf_counter() - t0
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(lib)), tvm.cpu())
    args = [tvm.runtime.tensor(np.ascontiguousarray(a)) for a in cap.inputs.values()]
    args += [tvm.runtime.tensor(lowered.weights[s.name]) for s in lowered.weight_specs]
    out = vm["main"](*args).numpy()
    timing = time_call(lambda: vm["main"](*args), warmup=1, runs=runs)
    weight_elements = sum(int(np.prod(s.shape)) for s in lowered.weight_specs) if scheme is None else None
    return {"name": f"edgegen cpu {name}", "scheme": name, "median_ms": timing["median_ms"],
            "min_ms": timing["min_ms"], "weights_bytes": weights.stat().st_size,
            "artifact_bytes": weights.stat().st_size + lib.stat().st_size,
            "bits_per_weight": info.get("bits_per_weight", 32.0),
            "bits_per_weight_quantized": info.get("bits_per_weight_quantized"),
            "psnr_vs_torch_db": round(psnr(reference, out), 2), "build_s": round(build_s, 1),
            **({"weight_elements": weight_elements} if weight_elements else {})}


def ort_rows(cap, runs: int, workdir: Path, reference) -> list[dict]:
    from edgegen.converters import onnx_export
    from edgegen.core import psnr
    from edgegen.core.quant import parse
    from edgegen.runtimes.onnxruntime import adapt_feed

    fp32 = workdir / "onnx" / "fp32" / "model.onnx"
    fp32.parent.mkdir(parents=True)
    onnx_export.export(cap, fp32)
    rows = []
    for label, scheme in (("fp32", None), ("int8 (quantize_dynamic)", "w8"), ("int4 (MatMulNBits g32)", "w4g32")):
        path = fp32
        if scheme:
            path = workdir / "onnx" / scheme / "model.onnx"
            path.parent.mkdir(parents=True)
            for f in fp32.parent.iterdir():
                (path.parent / f.name).write_bytes(f.read_bytes())
            onnx_export.quantize(path, parse(scheme), None)
        sess = onnx_export.session(path)
        feed = adapt_feed(sess, cap.inputs)
        out = sess.run(None, feed)[0]
        timing = time_call(lambda: sess.run(None, feed), warmup=1, runs=runs)
        # the model and the external data it refers to (the copied float32 data file is not part of it)
        size = path.stat().st_size + sum((path.parent / n).stat().st_size
                                         for n in onnx_export.external_data_files(path))
        rows.append({"name": f"onnxruntime {label}", "scheme": f"ort-{scheme or 'fp32'}",
                     "median_ms": timing["median_ms"], "min_ms": timing["min_ms"], "artifact_bytes": size,
                     "psnr_vs_torch_db": round(psnr(reference, out), 2)})
        del sess
        gc.collect()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=["sd14", "tiny"], default="sd14")
    parser.add_argument("--latent", type=int, default=16, help="latent height/width (64 = 512x512 images)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--schemes", default=",".join(SCHEMES))
    parser.add_argument("--skip-ort", action="store_true")
    args = parser.parse_args()

    import torch

    from edgegen.converters import capture, lower
    from edgegen.core.quant import parse

    torch.set_num_threads(torch.get_num_threads())
    cap = unet_capture(args.shape, args.latent)
    reference = capture.run_torch(cap)["out_sample"]
    with torch.no_grad():
        module_inputs = [torch.from_numpy(a) for a in cap.inputs.values()]
        torch_ms = time_call(lambda: cap.module(*module_inputs), warmup=1, runs=args.runs)
    rows = [{"name": "torch eager fp32", "scheme": "torch", **torch_ms}]
    print(f"torch eager fp32: {torch_ms['median_ms']:.0f} ms", flush=True)
    tvm_target = lower.resolve_target({"kind": "llvm", "mcpu": "host"})
    lowered = lower.to_relax(capture.export(cap), len(cap.inputs), "unet")
    with tempfile.TemporaryDirectory(dir=ROOT / ".cache") as tmp:
        workdir = Path(tmp)
        for name in ["fp32", *[s for s in args.schemes.split(",") if s]]:
            row = tvm_row(name, lowered, cap, None if name == "fp32" else parse(name), tvm_target, args.runs,
                          workdir, reference)
            rows.append(row)
            print(f"{row['name']:34s} {row['median_ms']:9.0f} ms  {row['bits_per_weight']:6.2f} bits/weight  "
                  f"{row['artifact_bytes'] / 1e6:8.1f} MB  {row['psnr_vs_torch_db']:6.1f} dB  "
                  f"(built in {row['build_s']:.0f} s)", flush=True)
            gc.collect()
        if not args.skip_ort:
            for row in ort_rows(cap, args.runs, workdir, reference):
                rows.append(row)
                print(f"{row['name']:34s} {row['median_ms']:9.0f} ms  {'':19s} {row['artifact_bytes'] / 1e6:8.1f} MB"
                      f"  {row['psnr_vs_torch_db']:6.1f} dB", flush=True)
    base = next(r for r in rows if r["scheme"] == "fp32")
    ort = {r["scheme"]: r for r in rows if r["scheme"].startswith("ort-")}
    print(f"\n{'runner':34s} {'ms':>9s} {'vs edgegen fp32':>16s} {'vs ORT same bits':>17s} {'MB':>8s} {'bits/w':>7s}")
    for r in rows:
        peer = ort.get({"w8": "ort-w8", "w8a8": "ort-w8", "w4g32": "ort-w4g32"}.get(r["scheme"], "ort-fp32"))
        r["vs_edgegen_fp32"] = round(r["median_ms"] / base["median_ms"], 3)
        r["vs_onnxruntime"] = round(r["median_ms"] / peer["median_ms"], 3) if peer else None
        print(f"{r['name']:34s} {r['median_ms']:9.0f} {r['vs_edgegen_fp32']:15.2f}x "
              f"{(str(r['vs_onnxruntime']) + 'x') if peer else '-':>17s} "
              f"{r.get('artifact_bytes', 0) / 1e6:8.1f} {r.get('bits_per_weight', '') or '':>7}")
    path = write_json("quant", {"shape": args.shape, "latent": args.latent, "runs": args.runs, "rows": rows})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
