"""`edgegen profile` and `edgegen estimate`: where the time goes, measured here and estimated on a phone.

profile: every kernel call of a TVM artifact timed through the Relax VM's
instrument hook, summed by operator category.
estimate: a roofline time per kernel, max(FLOPs / peak FLOP/s, bytes / bandwidth),
from the kernel table the build records (calls, FLOPs, bytes per kernel) and a
device profile of edgegen/core/device_profiles.json. It is a lower bound: real
kernels reach a fraction of peak.
"""

from __future__ import annotations

import re
import time

import numpy as np

CATEGORIES = ("convolution", "linear/matmul", "attention", "normalization", "elementwise", "other")
_ELEMENTWISE = re.compile(r"add|multiply|subtract|divide|sigmoid|tanh|exp|erf|gelu|silu|power|sqrt|cast|"
                          r"maximum|minimum|negative|clip|where|sin|cos|rsqrt")


def category(kernel: str, shapes: list[tuple] | None = None) -> str:
    """The operator category of a fused kernel, from the operators in its name. A matmul whose
    operands are all activations of rank 3 or more (no 2-D weight) is attention's QK^T or PV."""
    if "conv" in kernel:
        return "convolution"
    if "softmax" in kernel:
        return "attention"
    if "matmul" in kernel or "dense" in kernel:
        if shapes and all(len(s) >= 3 for s in shapes):
            return "attention"
        return "linear/matmul"
    if "norm" in kernel:
        return "normalization"
    if _ELEMENTWISE.search(kernel):
        return "elementwise"
    return "other"


def calls_per_image(pipeline: dict, steps: int) -> dict[str, float]:
    """How often each component runs for one image at `steps` denoising steps."""
    if pipeline["kind"] == "stable-diffusion":
        return {"text_encoder": 1.0, "unet": float(steps), "vae_decoder": float(_vae_tiles(pipeline))}
    return {"transformer": steps / pipeline.get("batch", 1)}


def _vae_tiles(pipeline: dict) -> int:
    """How many decoder calls decode one image: 1, or its tiles where built with --vae-tile."""
    from edgegen.runtimes.vae_tiles import tile_starts, tiling_of

    tiling = tiling_of(pipeline, tuple(pipeline["latent_shape"]))
    if tiling is None:
        return 1
    (th, tw), overlap, _ = tiling
    h, w = pipeline["latent_shape"][2:]
    return len(tile_starts(h, th, overlap)) * len(tile_starts(w, tw, overlap))


def profile(artifact_dir, runs: int = 3, steps: int = 20, threads: int | None = None) -> dict:
    """Per-kernel and per-category time of each component on this CPU, and per image, on `threads`
    CPU threads (default: every core this process may use); result["threads"] says how many ran."""
    from edgegen.bench import example_inputs
    from edgegen.core import Artifact
    from edgegen.runtimes import load_component

    art = Artifact.open(artifact_dir)
    result = {"artifact": str(art.root), "runs": runs, "steps": steps, "threads": None, "components": {}}
    for name, comp in art.components.items():
        if comp.backend != "tvm_vm":
            raise ValueError(f"profile times TVM kernels; component {name!r} runs on {comp.backend!r}")
        session = load_component(art, name, threads)
        result["threads"] = session.threads
        feed = example_inputs(comp)
        session.run(**feed)                      # warm-up
        kernels: dict[str, dict] = {}
        clock = {}

        def instrument(func, symbol, before_run, ret_value, *args):
            if before_run:
                clock["t"] = time.perf_counter()
                return 0
            seconds = time.perf_counter() - clock["t"]
            if symbol.startswith("vm.builtin") or symbol.startswith("relax."):
                symbol = "(VM runtime)"
            entry = kernels.get(symbol)
            if entry is None:
                shapes = [tuple(a.shape) for a in args[:-1] if hasattr(a, "shape")]
                entry = kernels[symbol] = {"seconds": 0.0, "calls": 0,
                                           "category": "other" if symbol == "(VM runtime)"
                                           else category(symbol, shapes)}
            entry["seconds"] += seconds
            entry["calls"] += 1
            return 0

        session.set_instrument(instrument)
        wall = []
        for _ in range(runs):
            t = time.perf_counter()
            session.run(**feed)
            wall.append(time.perf_counter() - t)
        session.set_instrument(None)
        session.close()
        for entry in kernels.values():
            entry["seconds"] /= runs
            entry["calls"] //= runs
        by_cat = {c: sum(k["seconds"] for k in kernels.values() if k["category"] == c) for c in CATEGORIES}
        result["components"][name] = {"instrumented_ms": round(float(np.median(wall)) * 1e3, 3),
                                      "categories_ms": {c: round(v * 1e3, 3) for c, v in by_cat.items()},
                                      "kernels": kernels}
    weights = calls_per_image(art.pipeline, steps)
    per_image = {c: sum(weights.get(n, 0) * r["categories_ms"][c] for n, r in result["components"].items())
                 for c in CATEGORIES}
    total = sum(per_image.values()) or 1.0
    result["per_image"] = {"ms": {c: round(v, 2) for c, v in per_image.items()},
                           "share": {c: round(v / total, 4) for c, v in per_image.items()}}
    return result


def estimate(kernel_tables: dict[str, list], pipeline: dict, device: dict, steps: int = 20,
             precision: str = "fp16", arithmetic: dict[str, str] | None = None) -> dict:
    """Roofline time per component and per image on `device` (an entry of device_profiles.json).
    Kernel tables are counted in float32; precision "fp16" halves the float bytes (not a kernel's
    `packed_bytes`: quantized weights, integer ids). `arithmetic` (component -> "fp16" or "fp32",
    default: the precision) picks the peak FLOP/s: kernels that keep float16 in memory but compute
    in float32 (fp16 storage) run at the fp32 peak."""
    bandwidth = device["memory_bandwidth_bytes_per_s"]
    scale = 0.5 if precision == "fp16" else 1.0
    components = {}
    for name, table in kernel_tables.items():
        peak = device["peak_flops"][(arithmetic or {}).get(name, precision)]
        compute = memory = total = 0.0
        by_cat = dict.fromkeys(CATEGORIES, 0.0)
        for k in table:
            packed = k.get("packed_bytes", 0)
            tc, tm = k["flops"] / peak, ((k["bytes"] - packed) * scale + packed) / bandwidth
            t = max(tc, tm) * k["calls"]
            total += t
            compute += tc * k["calls"]
            memory += tm * k["calls"]
            by_cat[category(k["kernel"], [tuple(x) for x in k.get("arg_shapes", [])])] += t
        components[name] = {"seconds": total, "compute_bound_s": compute, "memory_bound_s": memory,
                            "arithmetic": (arithmetic or {}).get(name, precision),
                            "gflop": sum(k["flops"] * k["calls"] for k in table) / 1e9,
                            "categories_s": by_cat}
    weights = calls_per_image(pipeline, steps)
    image = sum(weights.get(n, 0) * c["seconds"] for n, c in components.items())
    return {"device": device["name"], "precision": precision, "steps": steps, "components": components,
            "image_s": image, "kind": "roofline lower bound: every kernel at peak FLOP/s or peak bandwidth"}
