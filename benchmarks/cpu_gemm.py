"""The CPU target's kernels at Stable Diffusion 1.5 shapes against onnxruntime and torch,
all on the same number of threads, in one run:

- linear 2x4096x320 -> 1280 with bias (SD 1.5's feed-forward at 64x64 latents);
- 3x3 convolution 2x320x64x64 -> 320 with bias;
- self-attention, 2 x 8 heads x 4096 tokens x 40 dims (torch: scaled_dot_product_attention);
- cross-attention, the same queries over 77 keys (the text encoder's tokens);
- GroupNorm (32 groups) + SiLU on 2x320x64x64.

    python benchmarks/cpu_gemm.py [--threads 2] [--runs 10] [--only linear,conv,attention,cross,groupnorm]

edgegen's side is the graph torch.export gives for the module, lowered by edgegen's CPU pipeline
(`converters.lower`). Prints median/min ms and edgegen's time over each peer's; writes
benchmarks/results/cpu_gemm.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import time_call, write_json  # noqa: E402


def attention_module():
    """torch's scaled_dot_product_attention on q, k, v (batch, heads, tokens, head dim), as SD 1.5's
    attention layers call it (no mask)."""
    import torch

    class Attention(torch.nn.Module):
        def forward(self, q, k, v):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v)

    return Attention()


def cases(only):
    """(name, module, input shapes) for each kernel named in `only`."""
    import torch

    torch.manual_seed(0)
    out = []
    if "linear" in only:
        out.append(("linear 2x4096x320->1280", torch.nn.Linear(320, 1280), [(2, 4096, 320)]))
    if "conv" in only:
        out.append(("conv3x3 2x320x64x64->320", torch.nn.Conv2d(320, 320, 3, padding=1), [(2, 320, 64, 64)]))
    if "attention" in only:
        out.append(("self-attn 2x8x4096x40", attention_module(), [(2, 8, 4096, 40)] * 3))
    if "cross" in only:
        out.append(("cross-attn 2x8x4096x40,77", attention_module(), [(2, 8, 4096, 40), (2, 8, 77, 40), (2, 8, 77, 40)]))
    if "groupnorm" in only:
        out.append(("groupnorm32+silu 2x320x64x64",
                    torch.nn.Sequential(torch.nn.GroupNorm(32, 320), torch.nn.SiLU()), [(2, 320, 64, 64)]))
    return out


def edgegen_fn(module, xs):
    import torch
    import tvm
    from tvm import relax

    from edgegen.converters import lower

    exported = torch.export.export(module, tuple(torch.from_numpy(x) for x in xs))
    lowered = lower.cpu_weight_layouts(lower.to_relax(exported, len(xs), "bench"))
    target = lower.resolve_target({"kind": "llvm", "mcpu": "host"})
    vm = relax.VirtualMachine(lower.compile_module(lowered.module, target), tvm.cpu())
    args = [tvm.runtime.tensor(x) for x in xs] + [tvm.runtime.tensor(lowered.weights[s.name])
                                                  for s in lowered.weight_specs]
    return lambda: vm["main"](*args), lambda: vm["main"](*args).numpy()


def ort_fn(module, xs, threads, workdir):
    import onnxruntime as ort
    import torch

    path = Path(workdir) / "m.onnx"
    names = [f"x{i}" for i in range(len(xs))]
    with warnings.catch_warnings():   # the TorchScript exporter's deprecation notice: these modules export fine
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(module, tuple(torch.from_numpy(x) for x in xs), str(path), input_names=names,
                          output_names=["y"], dynamo=False, opset_version=17)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = dict(zip(names, xs))
    return lambda: sess.run(None, feed)[0]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--only", default="linear,conv,attention,cross,groupnorm")
    args = parser.parse_args(argv)
    os.environ["TVM_NUM_THREADS"] = str(args.threads)   # before TVM's pool first starts
    import torch

    from edgegen.core.metrics import psnr

    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, module, shapes in cases(args.only.split(",")):
            rng = np.random.default_rng(0)
            xs = [rng.standard_normal(shape, dtype=np.float32) for shape in shapes]
            xt = [torch.from_numpy(x) for x in xs]
            with torch.no_grad():
                reference = module(*xt).numpy()
                t_torch = time_call(lambda: module(*xt), warmup=2, runs=args.runs)
            ort = ort_fn(module, xs, args.threads, tmp)
            t_ort = time_call(ort, warmup=2, runs=args.runs)
            del ort     # onnxruntime's arena (attention's score matrices) goes before edgegen allocates its own
            run, result = edgegen_fn(module, xs)
            db = psnr(reference, result())
            t_ours = time_call(run, warmup=2, runs=args.runs)
            del run, result
            rows.append({"kernel": name, "threads": args.threads, "torch": t_torch, "onnxruntime": t_ort,
                         "edgegen": t_ours, "psnr_vs_torch_db": db,
                         "edgegen_vs_onnxruntime": t_ours["median_ms"] / t_ort["median_ms"],
                         "edgegen_vs_torch": t_ours["median_ms"] / t_torch["median_ms"]})
    print(f"threads: {args.threads} (torch, onnxruntime intra-op, TVM pool); median (min) ms")
    print(f"{'kernel':28s} {'torch':>16s} {'onnxruntime':>16s} {'edgegen':>16s} "
          f"{'vs ORT':>7s} {'vs torch':>9s} {'PSNR':>6s}")
    for r in rows:
        cols = " ".join(f"{r[k]['median_ms']:7.1f} ({r[k]['min_ms']:6.1f})"
                        for k in ("torch", "onnxruntime", "edgegen"))
        print(f"{r['kernel']:28s} {cols} {r['edgegen_vs_onnxruntime']:6.2f}x {r['edgegen_vs_torch']:8.2f}x "
              f"{r['psnr_vs_torch_db']:6.1f}")
    path = write_json("cpu_gemm", {"rows": rows, "note": "ratios are edgegen time / peer time: below 1 is faster"})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
