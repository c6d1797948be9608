"""Class accuracy of the digits generator with its weights quantized by each scheme.

    python examples/digits/quant_eval.py [--samples-per-class 10] [--seed 0]

The convolution and linear weights are quantized with edgegen's numpy quantizers
(edgegen/core/quant.py), stored as the scheme stores them, and dequantized into a
copy of the fp32 model. Sampling then runs in torch from the same noise for every
scheme. The patch embedding (first layer) and the final projection (last layer)
stay fp32, as do norms, embeddings and biases. Prints and writes JSON: accuracy,
agreement with fp32 (PSNR of the samples), bits per weight of the quantized
layers and of the whole model (the rest counted at 16 bits).
"""

import argparse
import copy
import json
import sys
from pathlib import Path

import numpy as np
import torch

from edgegen.core import psnr
from edgegen.core.quant import dequantize_weight, parse, quantize_weight
from edgegen.digits import DigitClassifier, example_dir
from edgegen.reference import dit_sample

SCHEMES = ("fp16", "w8", "w4g32", "w4g64", "pal6", "pal4", "ternary")
KEEP = ("pos_embed.proj", "proj_out_2")   # first and last layer stay fp32


def quantized_copy(model, scheme):
    """The model with every eligible weight replaced by its quantize->dequantize round trip."""
    q = copy.deepcopy(model)
    stored_bits = elements = 0
    for name, module in q.named_modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)) and name not in KEEP:
            w = module.weight.detach().numpy()
            packed = quantize_weight(w, scheme, out_axis=0)
            module.weight.data = torch.from_numpy(dequantize_weight(packed, out_axis=0))
            stored_bits += packed.bits_per_weight * w.size
            elements += w.size
    total = sum(p.numel() for p in model.parameters())
    return q, stored_bits / elements, (stored_bits + 16 * (total - elements)) / total, elements / total


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples-per-class", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/digits_quant.json")
    args = parser.parse_args()

    from diffusers import DiTTransformer2DModel

    root = example_dir() / "pipeline"
    index = json.loads((root / "model_index.json").read_text())
    steps, guidance = index["edgegen"]["sampling"]["steps"], index["edgegen"]["sampling"]["guidance_scale"]
    scheduler_config = json.loads((root / "scheduler" / "scheduler_config.json").read_text())
    model = DiTTransformer2DModel.from_pretrained(root / "transformer", torch_dtype=torch.float32).eval()
    labels = np.repeat(np.arange(10), args.samples_per_class)
    noise = np.random.default_rng(args.seed).standard_normal((len(labels), 1, 16, 16), dtype=np.float32)
    clf = DigitClassifier.load()
    ref = dit_sample(model, scheduler_config, labels, noise, steps, guidance)
    rows = [{"scheme": "fp32", "class_accuracy": clf.accuracy(ref, labels), "psnr_vs_fp32_db": None,
             "bits_quantized_layers": 32.0, "bits_whole_model": 32.0}]
    for name in SCHEMES:
        q, bits_layers, bits_model, share = quantized_copy(model, parse(name))
        out = dit_sample(q, scheduler_config, labels, noise, steps, guidance)
        rows.append({"scheme": name, "class_accuracy": clf.accuracy(out, labels),
                     "psnr_vs_fp32_db": round(psnr((ref + 1) / 2, (out + 1) / 2, peak=1.0), 2),
                     "bits_quantized_layers": round(bits_layers, 3), "bits_whole_model": round(bits_model, 3)})
    print(f"{len(labels)} samples, seed {args.seed}, {steps} steps, guidance {guidance}; quantized layers hold "
          f"{100 * share:.1f}% of the parameters")
    print(f"{'scheme':8s} {'accuracy':>9s} {'PSNR vs fp32':>13s} {'bits (layers)':>14s} {'bits (model)':>13s}")
    for r in rows:
        db = "-" if r["psnr_vs_fp32_db"] is None else f"{r['psnr_vs_fp32_db']:.1f}"
        print(f"{r['scheme']:8s} {100 * r['class_accuracy']:8.1f}% {db:>13s} {r['bits_quantized_layers']:14.2f} "
              f"{r['bits_whole_model']:13.2f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"samples": len(labels), "seed": args.seed, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
