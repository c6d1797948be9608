"""Stable Diffusion 1.4 shapes (real configs, random weights) at 512x512: the roofline estimate on
phone GPUs next to published measurements, and the per-category profile on this CPU.

    python benchmarks/sd14_estimate.py [--steps 20] [--profile-runs 1] [--skip-profile]

Builds (once, cached in .cache/) the SD 1.4-shaped pipeline folder and its cpu artifact, then runs
`edgegen estimate` for every device profile and `edgegen profile`; writes
benchmarks/results/sd14_estimate.json. The build takes about 10 minutes on 2 cores, the profile
about as long (one UNet step at 512x512 is tens of seconds here).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# Published end-to-end time for the same model on the same phone GPU, for comparison only.
PUBLISHED = {"adreno-740": {"seconds": 11.5, "steps": 20, "what": "Stable Diffusion 1.4, 512x512, Galaxy S23 "
                            "Ultra GPU (Chen et al., 'Speed Is All You Need', 2023)"}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--profile-runs", type=int, default=1)
    parser.add_argument("--skip-profile", action="store_true")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the cached artifact")
    args = parser.parse_args()

    import edgegen
    from edgegen.core import Artifact
    from edgegen.core.targets import device_profiles
    from edgegen.demo import artifact_is_current
    from edgegen.profiling import estimate, profile
    from edgegen.testing import make_tiny_sd_pipeline

    source = ROOT / ".cache" / "sd14-random"
    artifact = ROOT / ".cache" / "sd14-cpu-512"
    if not (source / "model_index.json").is_file():
        make_tiny_sd_pipeline(source, shape="sd14")
    if args.rebuild or not artifact_is_current(artifact, source):
        edgegen.build(source, artifact, target="cpu", overwrite=True,
                      progress=lambda ev, stage, s: print(f"{ev:5s} {stage} {s:.1f}s", flush=True))
    art = Artifact.open(artifact)
    tables = {n: c.info["kernels"] for n, c in art.components.items()}
    result = {"steps": args.steps, "height": 512, "width": 512, "estimates": {}, "published": PUBLISHED}
    for name, dev in device_profiles().items():
        for precision in ("fp16", "fp32"):
            est = estimate(tables, art.pipeline, dev, steps=args.steps, precision=precision)
            result["estimates"][f"{name}/{precision}"] = est
            ref = PUBLISHED.get(name)
            print(f"{name:12s} {precision}: roofline {est['image_s']:6.2f} s per image at {args.steps} steps"
                  + (f"   published {ref['seconds']} s ({est['image_s'] / ref['seconds']:.2f}x)"
                     if ref and precision == "fp16" else ""))
    if not args.skip_profile:
        prof = profile(artifact, runs=args.profile_runs, steps=args.steps)
        result["profile"] = {"per_image": prof["per_image"],
                             "components": {n: {k: v for k, v in c.items() if k != "kernels"}
                                            for n, c in prof["components"].items()}}
        print("CPU profile per image: " + ", ".join(f"{c} {100 * s:.1f}%"
                                                    for c, s in prof["per_image"]["share"].items()))
    print(f"wrote {write_json('sd14_estimate', result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
