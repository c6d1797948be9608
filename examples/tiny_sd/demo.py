"""Build a tiny Stable-Diffusion-shaped pipeline for the CPU and generate an image with it.

The pipeline is made here with random weights (no model hub is reachable), so
the image is noise-like: this demo shows the path, not a picture. The build is
cached under .cache/ and reused on the next run.
"""

import argparse
import time
from pathlib import Path

import edgegen
from edgegen.testing import make_tiny_sd_pipeline


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cache", default=".cache")
    parser.add_argument("--prompt", default="a photo of an astronaut riding a horse on the moon")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", default="demo.png")
    args = parser.parse_args()

    cache = Path(args.cache)
    model_dir, artifact_dir = cache / "tiny-sd", cache / "tiny-sd-cpu"
    if not (model_dir / "model_index.json").exists():
        make_tiny_sd_pipeline(model_dir)
    if not (artifact_dir / "manifest.json").exists():
        report = edgegen.build(model_dir, artifact_dir, target="cpu",
                               progress=lambda ev, stage, s: ev == "end" and print(f"  {stage}: {s:.1f}s"))
        print(f"built {artifact_dir} in {report.seconds:.1f}s ({report.bytes / 1e6:.1f} MB)")

    pipe = edgegen.runtimes.load(artifact_dir)
    t0 = time.perf_counter()
    result = pipe(args.prompt, num_inference_steps=args.steps, guidance_scale=7.5, seed=0)
    seconds = time.perf_counter() - t0
    result.images[0].save(args.out)
    print(f"wrote {args.out}: {args.steps} steps in {seconds:.2f}s "
          f"({1000 * result.timings['denoise_s'] / args.steps:.1f} ms per UNet step, CFG batch 2)")


if __name__ == "__main__":
    main()
