"""edgegen's GPU kernels against TVM's default lowering of the same graph and against torch, at
Stable Diffusion 1.5 shapes, in one run:

- GroupNorm(32) + SiLU on 1x320x64x64 (edgegen.group_norm_silu);
- attention with 4096/1024/256 queries and keys and head dim 40/80/160, 8 heads, batch 1
  (edgegen.flash_attention; SD 1.5's self-attention at 512x512, levels 1-3);
- 3x3 convolution 320->320 at 64x64 (edgegen.winograd_conv2d).

    python benchmarks/kernels.py [--runs 5] [--only groupnorm,attention,conv] [--on cpu,opencl]

Two tables, each against torch (CPU eager) in the same run:

- `cpu`: the CPU target (TVM's llvm backend, this machine's CPU). "tvm default" is
  `tvm.compile` with TVM's default pipeline; "edgegen loops" edgegen's CPU pipeline (its loop
  rule and fast math) without the kernels; "edgegen kernels" the same pipeline with the kernels
  substituted: Winograd, GroupNorm+SiLU, and the flash kernel's CPU form.
- `opencl`: the GPU kernels, through the launch-plan runtime on an OpenCL device (here PoCL,
  which runs OpenCL on the CPU cores): "edgegen" is the plan built with edgegen's kernels,
  "tvm default" the plan of TVM's own operator fusion and dlight GPU schedules. Timings are the
  kernels alone (arena already filled).

Each row checks the outputs against torch. Writes benchmarks/results/kernels.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import time_call, write_json  # noqa: E402

from edgegen.core.specs import TensorSpec  # noqa: E402

HEADS = 8


def group_norm_case():
    from tvm import relax

    shape = (1, 320, 64, 64)
    rng = np.random.default_rng(0)
    arrays = {"x": rng.standard_normal(shape, dtype=np.float32)}
    weights = {"gamma": rng.standard_normal(320, dtype=np.float32), "beta": rng.standard_normal(320, dtype=np.float32)}
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "float32"))
    g = relax.Var("gamma", relax.TensorType((320,), "float32"))
    b = relax.Var("beta", relax.TensorType((320,), "float32"))
    with bb.function("main", [x, g, b]):
        with bb.dataflow():
            y = relax.op.nn.silu(relax.op.nn.group_norm(x, g, b, num_groups=32, channel_axis=1, axes=[2, 3]))
            out = bb.emit_output(y)
        bb.emit_func_output(out)

    def torch_fn(t):
        import torch

        xt, gt, bt = (torch.from_numpy(a) for a in (arrays["x"], weights["gamma"], weights["beta"]))
        return lambda: torch.nn.functional.silu(torch.nn.functional.group_norm(xt, 32, gt, bt))

    return "GroupNorm+SiLU 1x320x64x64", bb.get(), arrays, weights, torch_fn


def attention_case(seq: int, dim: int):
    from tvm import relax

    rng = np.random.default_rng(1)
    scale = dim ** -0.25
    arrays = {"q": rng.standard_normal((HEADS, seq, dim), dtype=np.float32) * scale,
              "kt": rng.standard_normal((HEADS, dim, seq), dtype=np.float32) * scale,
              "v": rng.standard_normal((HEADS, seq, dim), dtype=np.float32)}
    bb = relax.BlockBuilder()
    q = relax.Var("q", relax.TensorType((HEADS, seq, dim), "float32"))
    kt = relax.Var("kt", relax.TensorType((HEADS, dim, seq), "float32"))
    v = relax.Var("v", relax.TensorType((HEADS, seq, dim), "float32"))
    with bb.function("main", [q, kt, v]):
        with bb.dataflow():
            p = relax.op.nn.softmax(relax.op.matmul(q, kt), axis=-1)
            out = bb.emit_output(relax.op.matmul(p, v))
        bb.emit_func_output(out)

    def torch_fn(t):
        import torch

        qt = torch.from_numpy(arrays["q"] / scale)[None]
        kt_ = torch.from_numpy(arrays["kt"] / scale).transpose(1, 2)[None]
        vt = torch.from_numpy(arrays["v"])[None]
        return lambda: torch.nn.functional.scaled_dot_product_attention(qt, kt_, vt)[0]

    return f"attention seq {seq} dim {dim}", bb.get(), arrays, {}, torch_fn


def conv_case():
    from tvm import relax

    rng = np.random.default_rng(2)
    arrays = {"x": rng.standard_normal((1, 320, 64, 64), dtype=np.float32)}
    weights = {"w": (rng.standard_normal((320, 320, 3, 3)) / 54).astype(np.float32),
               "b": rng.standard_normal((1, 320, 1, 1), dtype=np.float32)}
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 320, 64, 64), "float32"))
    w = relax.Var("w", relax.TensorType((320, 320, 3, 3), "float32"))
    b = relax.Var("b", relax.TensorType((1, 320, 1, 1), "float32"))
    with bb.function("main", [x, w, b]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.add(relax.op.nn.conv2d(x, w, padding=1), b))
        bb.emit_func_output(out)

    def torch_fn(t):
        import torch

        xt, wt, bt = (torch.from_numpy(a) for a in (arrays["x"], weights["w"], weights["b"][0, :, 0, 0]))
        return lambda: torch.nn.functional.conv2d(xt, wt, bt, padding=1)

    return "conv3x3 320->320 64x64", bb.get(), arrays, weights, torch_fn


def plan_row(module, arrays, weights, device: str, edgegen_kernels: bool, runs: int, workdir: Path):
    from edgegen.converters import gpu
    from edgegen.converters.lower import Lowered
    from edgegen.core.targets import get_target

    tgt = get_target(device)
    lowered = Lowered(module, [TensorSpec.of(n, a) for n, a in weights.items()], dict(weights))
    built = gpu.lower_to_plan(lowered, list(arrays), ["out"], tgt.tvm_target, gpu.limits_of(tgt.profile),
                              tgt.backend, edgegen_kernels=edgegen_kernels)
    files = gpu.write_files(built, workdir, "k", tgt.backend)
    session = gpu.open_session(built, workdir, files, "k", tgt.backend, arrays)
    try:
        out = session.run(**arrays)["out"]
        timing = time_call(session.launch_all, warmup=1, runs=runs)
    finally:
        session.close()
    return {**timing, "launches": len(built.plan["launches"]), "arena_bytes": built.plan["arena_bytes"],
            "attention": built.attention, "convolutions": built.convolutions}, out


def cpu_target_row(module, arrays, weights, mode: str, runs: int):
    """`module` compiled for this machine's CPU: "tvm" (TVM's default pipeline), "loops" (edgegen's
    CPU pipeline) or "kernels" (edgegen's CPU pipeline after edgegen's kernels are substituted)."""
    import tvm
    from tvm import relax

    from edgegen.converters import lower
    from edgegen.kernels import attention, group_norm, winograd

    target = lower.resolve_target({"kind": "llvm", "mcpu": "host"})
    weights = dict(weights)
    specs = [TensorSpec.of(n, a) for n, a in weights.items()]
    decisions: list = []
    if mode == "tvm":
        executable = tvm.compile(module, target=tvm.target.Target(target))
    else:
        if mode == "kernels":
            module = winograd.rewrite(module, weights, specs, decisions)
            module = tvm.transform.Sequential([attention.make_pass(), attention.make_fusion_pass(0, 0, decisions, cpu=True),
                                               group_norm.make_fusion_pass()])(module)
        executable = lower.compile_module(module, target)
    vm = relax.VirtualMachine(executable, tvm.cpu())
    args = [tvm.runtime.tensor(a) for a in arrays.values()] + [tvm.runtime.tensor(weights[s.name]) for s in specs]
    out = vm["main"](*args).numpy()
    return {**time_call(lambda: vm["main"](*args), warmup=1, runs=runs), "kernels": decisions}, out


CPU_COLUMNS = (("tvm_default", "tvm"), ("edgegen_loops", "loops"), ("edgegen_kernels", "kernels"))


def main(argv=None) -> int:
    import torch

    from edgegen.core.metrics import psnr

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", default="groupnorm,attention,conv")
    parser.add_argument("--on", default="cpu,opencl", help="cpu (the llvm target), opencl (the GPU kernels on OpenCL)")
    args = parser.parse_args(argv)
    on = args.on.split(",")
    if not on or set(on) - {"cpu", "opencl"}:
        parser.error(f"--on takes cpu, opencl or both (comma-separated), not {args.on!r}")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    cases = []
    only = args.only.split(",")
    if "groupnorm" in only:
        cases.append(group_norm_case())
    if "attention" in only:
        cases += [attention_case(seq, dim) for seq, dim in ((4096, 40), (1024, 80), (256, 160))]
    if "conv" in only:
        cases.append(conv_case())
    rows = []
    for name, module, arrays, weights, torch_fn in cases:
        fn = torch_fn(torch)
        reference = fn().numpy()
        row = {"kernel": name, "torch": time_call(fn, warmup=1, runs=args.runs)}
        if "cpu" in on:
            cpu = row["cpu_target"] = {}
            for key, mode in CPU_COLUMNS:
                cpu[key], out = cpu_target_row(module, arrays, weights, mode, args.runs)
                cpu[key]["psnr_vs_torch_db"] = psnr(reference, out.reshape(reference.shape))
            cpu["kernels_vs_tvm_default"] = cpu["edgegen_kernels"]["median_ms"] / cpu["tvm_default"]["median_ms"]
            cpu["kernels_vs_loops"] = cpu["edgegen_kernels"]["median_ms"] / cpu["edgegen_loops"]["median_ms"]
            cpu["kernels_vs_torch"] = cpu["edgegen_kernels"]["median_ms"] / row["torch"]["median_ms"]
        if "opencl" in on:
            with tempfile.TemporaryDirectory() as tmp:
                default, _ = plan_row(module, arrays, weights, "opencl", False, args.runs, Path(tmp) / "default")
                ours, out = plan_row(module, arrays, weights, "opencl", True, args.runs, Path(tmp) / "edgegen")
            row["opencl"] = {"tvm_default": default, "edgegen": ours,
                             "edgegen_vs_tvm_default": ours["median_ms"] / default["median_ms"],
                             "edgegen_vs_torch": ours["median_ms"] / row["torch"]["median_ms"],
                             "psnr_vs_torch_db": psnr(reference, out.reshape(reference.shape))}
        rows.append(row)
    if "cpu" in on:
        print("CPU target (llvm), ms; ratios are edgegen kernels' time over the other's")
        print(f"{'kernel':28s} {'torch':>9s} {'tvm default':>12s} {'edgegen loops':>14s} {'edgegen kernels':>16s} "
              f"{'vs tvm':>7s} {'vs loops':>9s} {'vs torch':>9s} {'PSNR':>7s}")
        for row in rows:
            cpu = row["cpu_target"]
            print(f"{row['kernel']:28s} {row['torch']['median_ms']:9.2f} {cpu['tvm_default']['median_ms']:12.2f} "
                  f"{cpu['edgegen_loops']['median_ms']:14.2f} {cpu['edgegen_kernels']['median_ms']:16.2f} "
                  f"{cpu['kernels_vs_tvm_default']:6.2f}x {cpu['kernels_vs_loops']:8.2f}x {cpu['kernels_vs_torch']:8.2f}x "
                  f"{cpu['edgegen_kernels']['psnr_vs_torch_db']:7.1f}")
    if "opencl" in on:
        print("GPU kernels on OpenCL, ms; ratios are edgegen's time over the other's")
        print(f"{'kernel':28s} {'torch':>9s} {'tvm default':>12s} {'edgegen':>9s} "
              f"{'vs tvm':>7s} {'vs torch':>9s} {'arena MiB tvm/edgegen':>22s} {'PSNR':>7s}")
        for row in rows:
            gpu = row["opencl"]
            arenas = f"{gpu['tvm_default']['arena_bytes'] / 2**20:.1f} / {gpu['edgegen']['arena_bytes'] / 2**20:.1f}"
            print(f"{row['kernel']:28s} {row['torch']['median_ms']:9.2f} {gpu['tvm_default']['median_ms']:12.2f} "
                  f"{gpu['edgegen']['median_ms']:9.2f} {gpu['edgegen_vs_tvm_default']:6.2f}x "
                  f"{gpu['edgegen_vs_torch']:8.2f}x {arenas:>22s} {gpu['psnr_vs_torch_db']:7.1f}")
    from edgegen.converters.lower import resolve_target

    device = {"cpu": resolve_target({"kind": "llvm", "mcpu": "host"})["mcpu"]}
    if "opencl" in on:
        from edgegen.runtimes.opencl import pick_device

        device["opencl"] = pick_device().name
    path = write_json("kernels", {"device": device, "runs": args.runs, "rows": rows,
                                  "note": "ratios are time / time: below 1 means edgegen is faster"})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
