"""What a phone must hold for Stable Diffusion 1.4/1.5 (real configs, random weights) built for Adreno
at 512x512: weights, arena and planned device memory per component and scheme, the build time,
and the Adreno 740 roofline estimate read from the GPU plan's own kernels.

    python benchmarks/gpu_memory.py [--schemes fp32,fp16,w8,w4g32] [--target adreno] [--steps 20]

fp32 is `--precision fp32`; fp16 is `--precision fp16` (float16 in memory, and float16 arithmetic
where the device profile has it, as adreno's does); w8 and w4g32 are `--precision fp16 --quant S`.
Each row's estimate is at the precision and arithmetic its build chose. Each build is
`edgegen.build(SD14, target=adreno, ..., execute=False)`: the kernels are generated and checked by the compile guard and the memory check, but not run (one UNet call at
512x512 on PoCL would take minutes; parity of quantized GPU plans is tested on tiny SD and the
digits generator). Google's published figures for SD 1.4 on the same phone stand beside them. Writes
benchmarks/results/gpu_memory.json.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# "Speed Is All You Need" (Chen et al., 2023): SD 1.4, 512x512, 20 steps on a Galaxy S23 Ultra GPU
PUBLISHED = {"seconds": 11.5, "memory_mb": 2093, "steps": 20, "device": "adreno-740"}
MIB = 2 ** 20


def measure(source: Path, out: Path, target: str, scheme: str, steps: int) -> dict:
    import edgegen
    from edgegen.core import Artifact
    from edgegen.core.targets import device_profile
    from edgegen.profiling import estimate

    t0 = time.perf_counter()
    precision = "fp32" if scheme == "fp32" else "fp16"
    quant = None if scheme in ("fp32", "fp16") else scheme
    edgegen.build(source, out, target=target, quant=quant, precision=precision, overwrite=True, execute=False,
                  progress=lambda ev, stage, s: print(f"    {stage}: {s:.0f}s", flush=True) if ev == "end" else None)
    seconds = time.perf_counter() - t0
    art = Artifact.open(out, verify=False)
    components = {}
    for name, comp in art.components.items():
        i = comp.info
        components[name] = {"weight_bytes": i["weight_bytes"], "arena_bytes": i["arena_bytes"],
                            "bits_per_weight": i["bits_per_weight"], "launches": i["launches"]}
    # at what the build chose (fp16 or fp32 in memory, and the arithmetic of each component's kernels)
    arithmetic = {n: c.info["precision"]["arithmetic"] for n, c in art.components.items()}
    est = estimate({n: c.info["kernels"] for n, c in art.components.items()}, art.pipeline,
                   device_profile(PUBLISHED["device"]), steps=steps, precision=precision, arithmetic=arithmetic)
    shutil.rmtree(out, ignore_errors=True)
    weights = sum(c["weight_bytes"] for c in components.values())
    return {"scheme": scheme, "precision": precision, "build_seconds": round(seconds, 1), "components": components,
            "weight_bytes": weights,
            # every component resident at once, each with its own arena (the runtime today)
            "planned_bytes": weights + sum(c["arena_bytes"] for c in components.values()),
            "estimate": {"image_s": round(est["image_s"], 3),
                         "components": {n: {"arithmetic": c["arithmetic"],
                                            **{k: round(c[k], 4) for k in ("seconds", "compute_bound_s",
                                                                            "memory_bound_s")}}
                                        for n, c in est["components"].items()}}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schemes", default="fp32,fp16,w8,w4g32", help="comma-separated; fp32 = no --quant")
    parser.add_argument("--target", default="adreno")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()

    from edgegen.testing import make_tiny_sd_pipeline

    source = ROOT / ".cache" / "sd14-random"
    if not (source / "model_index.json").is_file():
        make_tiny_sd_pipeline(source, shape="sd14")
    rows = []
    for scheme in args.schemes.split(","):
        print(f"{scheme}: building {args.target} at 512x512 ...", flush=True)
        rows.append(measure(source, ROOT / ".cache" / f"sd14-{args.target}-{scheme}", args.target, scheme,
                            args.steps))
        r = rows[-1]
        print(f"{r['scheme']:6s} weights {r['weight_bytes'] / MIB:8.1f} MiB  "
              f"planned {r['planned_bytes'] / MIB:8.1f} MiB  build {r['build_seconds']:6.0f} s  "
              f"Adreno 740 estimate, {args.steps} steps: {r['estimate']['image_s']:.2f} s", flush=True)
        for name, c in r["components"].items():
            e = r["estimate"]["components"][name]
            print(f"    {name:13s} weights {c['weight_bytes'] / MIB:8.1f} MiB ({c['bits_per_weight']:5.2f} bits/weight)"
                  f"  arena {c['arena_bytes'] / MIB:7.1f} MiB  per call ({e['arithmetic']} arithmetic): "
                  f"compute {e['compute_bound_s'] * 1e3:8.1f} ms, memory {e['memory_bound_s'] * 1e3:8.1f} ms",
                  flush=True)
    print(f"published ({PUBLISHED['device']}, SD 1.4, {PUBLISHED['steps']} steps): {PUBLISHED['seconds']} s per image, "
          f"{PUBLISHED['memory_mb']} MB")
    payload = {"target": args.target, "height": 512, "width": 512, "steps": args.steps, "rows": rows,
               "published": PUBLISHED}
    print(f"wrote {write_json('gpu_memory', payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
