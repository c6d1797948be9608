"""Class accuracy of the digits generator built with each quantization scheme, run as artifacts.

    python examples/digits/quant_eval.py [--samples-per-class 10] [--seed 0] [--schemes w8,w4g32] [--target cpu]
                                         [--precision fp16|fp32]

For each scheme this builds the artifact (`edgegen build --target T --quant S`: packed
weights, decoded inside the matmul/conv kernels; `--target mali` runs them on PoCL here), samples every class with
edgegen's runtime from the same noise, classifies the samples with the shipped
digit classifier, and compares them with the float32 torch sampler (PSNR of the
samples in [0, 1]). Prints a table and writes JSON: accuracy, PSNR, bits per weight
over the quantized layers and over the whole transformer, artifact size.
"""

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

import edgegen
from edgegen.core import psnr
from edgegen.digits import DigitClassifier, example_dir
from edgegen.reference import dit_sample

SCHEMES = ("fp16", "w8", "w4g32", "w4g64", "w4g128", "pal6", "pal4", "ternary", "mixed:30")


def evaluate(model_dir, scheme, cache: Path, labels, noise, clf, reference, target: str = "cpu",
             precision: str | None = None) -> dict:
    out = cache / f"digits-{target}-{(scheme or 'fp32').replace(':', '')}"
    t0 = time.perf_counter()
    report = edgegen.build(model_dir, out, target=target, quant=scheme, overwrite=True, precision=precision)
    build_s = time.perf_counter() - t0
    pipe = edgegen.runtimes.load(out)
    try:
        art = pipe(labels.tolist(), noise=noise, output_type="np")
    finally:
        pipe.close()
    info = pipe.artifact.components["transformer"].info
    q = info.get("quant") or {}
    row = {"scheme": scheme or "fp32", "precision": info.get("precision", {}).get("precision", "fp32"),
           "class_accuracy": clf.accuracy(art.images, labels),
           "psnr_vs_fp32_torch_db": round(psnr((reference + 1) / 2, (art.latents + 1) / 2, peak=1.0), 2),
           "bits_quantized_layers": q.get("bits_per_weight_quantized", 32.0),
           "bits_whole_model": q.get("bits_per_weight", 32.0), "artifact_bytes": report.bytes,
           "build_seconds": round(build_s, 1)}
    shutil.rmtree(out, ignore_errors=True)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples-per-class", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--schemes", default=",".join(SCHEMES), help="comma-separated; fp32 is always measured")
    parser.add_argument("--target", default="cpu", help="build target (a GPU target runs on PoCL/lavapipe here)")
    parser.add_argument("--precision", choices=["fp16", "fp32"], help="GPU targets: the build's precision")
    parser.add_argument("--cache", default=".cache/quant-eval")
    parser.add_argument("--out", help="JSON path (default benchmarks/results/digits_quant[_TARGET].json)")
    args = parser.parse_args()

    from diffusers import DiTTransformer2DModel

    model_dir = example_dir() / "pipeline"
    index = json.loads((model_dir / "model_index.json").read_text())
    steps, guidance = index["edgegen"]["sampling"]["steps"], index["edgegen"]["sampling"]["guidance_scale"]
    scheduler_config = json.loads((model_dir / "scheduler" / "scheduler_config.json").read_text())
    model = DiTTransformer2DModel.from_pretrained(model_dir / "transformer", torch_dtype=torch.float32).eval()
    labels = np.repeat(np.arange(10), args.samples_per_class)
    noise = np.random.default_rng(args.seed).standard_normal((len(labels), 1, 16, 16), dtype=np.float32)
    clf = DigitClassifier.load()
    reference = dit_sample(model, scheduler_config, labels, noise, steps, guidance)
    rows = [{"scheme": "fp32 torch", "class_accuracy": clf.accuracy(reference, labels)}]
    for scheme in [None, *[s for s in args.schemes.split(",") if s]]:
        rows.append(evaluate(model_dir, scheme, Path(args.cache), labels, noise, clf, reference, args.target,
                             args.precision))
        r = rows[-1]
        print(f"{r['scheme']:10s} {r['precision']} accuracy {100 * r['class_accuracy']:5.1f}%  PSNR vs fp32 torch "
              f"{r['psnr_vs_fp32_torch_db']:6.1f} dB  bits/weight {r['bits_quantized_layers']:6.2f} (layers) "
              f"{r['bits_whole_model']:6.2f} (model)  {r['artifact_bytes'] / 1e6:.2f} MB", flush=True)
    print(f"fp32 torch accuracy {100 * rows[0]['class_accuracy']:.1f}% ({len(labels)} samples, seed {args.seed}, "
          f"{steps} steps, guidance {guidance})")
    out = Path(args.out or f"benchmarks/results/digits_quant{'' if args.target == 'cpu' else '_' + args.target}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"samples": len(labels), "seed": args.seed, "target": args.target, "rows": rows},
                              indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
