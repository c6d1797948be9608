"""`mixed:<dB>` at SD 1.5 scale: the search's per-layer cost on an SD 1.5-shaped UNet, extrapolated.

    python benchmarks/quant_mixed_scale.py [--max-layers N]

The SD 1.5 UNet's Linear/Conv2d layers are listed from diffusers' UNet2DConditionModel with SD 1.5's
config on torch's meta device (no weights allocated: the full UNet does not fit this machine's
budget next to its statistics). For each distinct layer shape, random weights and synthetic input
statistics of that width (the costs depend on shapes, not values) are timed through what the search
does per layer: every rung of MIXED_LADDER quantized with the calibrated methods, dequantized, and
its output error predicted (edgegen.core.quant.output_error), plus the AWQ scale search the packing
adds on the chosen rung. The sum over all layers is the search's quantization time; the component
runs the search adds (statistics with backward probes, a few measured rounds) are estimated from
the UNet step time benchmarks/sd14_estimate.py reports on this machine, given with --unet-step-s.
Writes benchmarks/results/quant_mixed_scale.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_json  # noqa: E402

SD15 = dict(sample_size=64, in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280, 1280),
            layers_per_block=2, cross_attention_dim=768, attention_head_dim=8,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)


def census() -> tuple[Counter, int]:
    """{(rows, channels, taps): count} of SD 1.5's quantizable Linear/Conv2d layers (conv_in and conv_out,
    the first and last, stay float32; so does a reduction narrower than quantize.MIN_WIDTH), and
    the weights they hold."""
    import torch
    from diffusers import UNet2DConditionModel

    from edgegen.converters.quantize import MIN_WIDTH

    with torch.device("meta"):
        unet = UNet2DConditionModel(**SD15)
    shapes: Counter = Counter()
    for name, mod in unet.named_modules():
        if name in ("conv_in", "conv_out") or not isinstance(mod, (torch.nn.Linear, torch.nn.Conv2d)):
            continue
        w = mod.weight
        taps = 1 if w.ndim == 2 else int(np.prod(w.shape[2:]))
        if w.shape[1] * taps >= MIN_WIDTH:
            shapes[(int(w.shape[0]), int(w.shape[1]), taps)] += 1
    return shapes, sum(r * c * t * n for (r, c, t), n in shapes.items())


def time_layer(rows: int, channels: int, taps: int, rng) -> dict:
    """Seconds for one layer of this shape through the search's per-layer work."""
    from edgegen.core.quant import (HESSIAN_MAX_WIDTH, LayerStats, dequantize_weight, output_error, parse,
                                    quantize_scaled, quantize_weight)
    from edgegen.converters.quantize import MIXED_LADDER

    width = channels * taps
    w = (rng.standard_normal((rows, width)) * 0.02).astype(np.float32)
    x = rng.standard_normal((min(2 * width, 8192), width)) * np.exp(rng.standard_normal(width))
    t0 = time.perf_counter()
    stats = LayerStats.of(x, full=width <= HESSIAN_MAX_WIDTH)
    stats.gain = np.abs(rng.standard_normal(rows)) * 1e-6
    t_stats = time.perf_counter() - t0
    t0 = time.perf_counter()
    for name in MIXED_LADDER:
        back = dequantize_weight(quantize_weight(w, parse(name), stats=stats))
        output_error(w, back, stats)
    t_rungs = time.perf_counter() - t0
    t0 = time.perf_counter()
    quantize_scaled(w, parse("w4g32"), stats, channels)      # the packing's AWQ search on a chosen rung
    t_pack = time.perf_counter() - t0
    return {"rungs_s": round(t_rungs, 3), "pack_awq_s": round(t_pack, 3), "synthetic_stats_s": round(t_stats, 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-layers", type=int, default=0, help="time only the N most common shapes")
    parser.add_argument("--unet-step-s", type=float, default=30.0,
                        help="one SD 1.5 UNet call at 512x512 (batch 2) on this machine, for the run estimates")
    parser.add_argument("--calibration", type=int, default=6, help="calibration UNet calls (prompts x steps)")
    parser.add_argument("--rounds", type=int, default=4, help="measured rounds of the search")
    args = parser.parse_args()
    shapes, weights = census()
    rng = np.random.default_rng(0)
    picked = shapes.most_common(args.max_layers or None)
    per_shape = {}
    for (rows, channels, taps), count in picked:
        got = time_layer(rows, channels, taps, rng)
        per_shape[f"{rows}x{channels}x{taps}"] = {"count": count, **got}
        print(f"{rows} x {channels} x {taps} (x{count}): rungs {got['rungs_s']:.2f} s, "
              f"pack+AWQ {got['pack_awq_s']:.2f} s", flush=True)
    timed = sum(v["count"] for v in per_shape.values())
    quant_s = sum(v["count"] * (v["rungs_s"] + v["pack_awq_s"]) for v in per_shape.values())
    if timed < sum(shapes.values()):      # untimed shapes: at the timed layers' cost per weight
        timed_w = sum(r * c * t * shapes[(r, c, t)] for (r, c, t), _ in picked)
        quant_s *= weights / timed_w
    # statistics: a forward and GAIN_PROBES backward passes (about 2 forwards each) per calibration call;
    # each measured round: every calibration call once more (end-output checks are the pipeline's, not here)
    from edgegen.converters.layer_stats import GAIN_PROBES

    runs_s = args.unet_step_s * args.calibration * (1 + 2 * GAIN_PROBES + args.rounds)
    result = {"layers": sum(shapes.values()), "distinct_shapes": len(shapes), "weights": weights,
              "shapes_timed": len(per_shape), "per_shape": per_shape,
              "quantization_s": round(quant_s, 1), "component_runs_s_estimate": round(runs_s, 1),
              "unet_step_s_assumed": args.unet_step_s, "calibration_calls": args.calibration,
              "rounds": args.rounds, "total_minutes_estimate": round((quant_s + runs_s) / 60, 1)}
    print(f"SD 1.5 UNet: {result['layers']} layers ({len(shapes)} shapes, {weights / 1e6:.0f}M weights): "
          f"quantization {quant_s / 60:.1f} min + component runs ~{runs_s / 60:.1f} min "
          f"= ~{result['total_minutes_estimate']} min")
    write_json("quant_mixed_scale", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
