"""Class accuracy of the digits generator in torch and as a CPU artifact, on the same seeds.

    python examples/digits/evaluate.py [--samples-per-class 10] [--seed 0]

Both sides start from the same noise; prints both accuracies, their agreement (PSNR)
and the time per image of each.
"""

import argparse
import json
import time

import numpy as np
import torch

import edgegen
from edgegen.digits import DigitClassifier, example_dir
from edgegen.reference import dit_sample


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples-per-class", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", default=".cache/edgegen-demo")
    args = parser.parse_args()

    from diffusers import DiTTransformer2DModel

    from edgegen.demo import ensure_artifact

    model_dir = example_dir() / "pipeline"
    artifact_dir = f"{args.cache}/digits-cpu"
    ensure_artifact(model_dir, artifact_dir)
    pipe = edgegen.runtimes.load(artifact_dir)
    steps, guidance = pipe.sampling["steps"], pipe.sampling["guidance_scale"]
    labels = np.repeat(np.arange(10), args.samples_per_class)
    noise = np.random.default_rng(args.seed).standard_normal((len(labels), 1, 16, 16), dtype=np.float32)
    clf = DigitClassifier.load()

    t0 = time.perf_counter()
    art = pipe(labels.tolist(), noise=noise, output_type="np")
    art_s = time.perf_counter() - t0
    model = DiTTransformer2DModel.from_pretrained(model_dir / "transformer", torch_dtype=torch.float32).eval()
    t0 = time.perf_counter()
    ref = dit_sample(model, pipe.scheduler_config, labels, noise, steps, guidance)
    torch_s = time.perf_counter() - t0
    result = {"samples": len(labels), "seed": args.seed, "steps": steps, "guidance_scale": guidance,
              "torch_class_accuracy": clf.accuracy(ref, labels),
              "artifact_class_accuracy": clf.accuracy(art.images, labels),
              "agreement_psnr_db": round(edgegen.core.psnr((ref + 1) / 2, (art.latents + 1) / 2, peak=1.0), 1),
              "torch_ms_per_image": round(1000 * torch_s / len(labels), 2),
              "artifact_ms_per_image": round(1000 * art_s / len(labels), 2)}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
