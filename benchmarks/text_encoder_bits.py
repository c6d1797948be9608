"""Bits per weight of an SD 1.5-shaped CLIP text encoder (transformers' real config, random weights)
quantized for the cpu target, with its lookup tables (the 49408 x 768 token embedding, the 77 x 768
positions) left float32 as before, and packed in the scheme's format and decoded per looked-up row
(converters/quantize.py with_lookup_tables). Also the packed encoder's output against float32 on
a tokenized prompt, compiled for this CPU.

    python benchmarks/text_encoder_bits.py [--quant w4g32] [--no-compile]

Writes benchmarks/results/text_encoder_bits.json.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_json  # noqa: E402

# openai/clip-vit-large-patch14's text config, as runwayml/stable-diffusion-v1-5 ships it
SD15_TEXT = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                 num_hidden_layers=12, max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quant", default="w4g32")
    ap.add_argument("--no-compile", action="store_true")
    args = ap.parse_args()
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    from edgegen.converters import capture, lower, quantize
    from edgegen.core.metrics import psnr
    from edgegen.core.quant import parse

    torch.manual_seed(0)
    model = CLIPTextModel(CLIPTextConfig(**SD15_TEXT)).eval()
    ids = np.random.default_rng(0).integers(0, 49408, (1, 77)).astype(np.int64)
    cap = capture.clip_text_encoder(model, ids)
    lowered = lower.to_relax(capture.export(cap), 1, "text_encoder")
    scheme = parse(args.quant)
    rows = {}
    for tables in (False, True):
        layers, choices, info = quantize.choose(lowered, scheme, {"kind": "llvm"})
        if tables:
            layers, choices = quantize.with_lookup_tables(lowered, scheme, layers, choices)
        t0 = time.perf_counter()
        packed, report = quantize.pack(lowered, choices)
        record = quantize.summarize(info, layers, lowered.weight_specs, packed.weights, report)
        row = {"lookup_tables": "packed" if tables else "float32", "bits_per_weight": record["bits_per_weight"],
               "weight_bytes": int(sum(a.nbytes for a in packed.weights.values())),
               "pack_seconds": round(time.perf_counter() - t0, 1)}
        if not args.no_compile:
            with tempfile.TemporaryDirectory() as tmp:
                lower.compile_module(packed.module, lower.resolve_target({"kind": "llvm"})).export_library(
                    f"{tmp}/te.so")
                got = lower.run_library(f"{tmp}/te.so", [cap.inputs["input_ids"]],
                                        [packed.weights[s.name] for s in packed.weight_specs])[0]
            row["psnr_db_vs_fp32_torch"] = round(float(psnr(capture.run_torch(cap)["last_hidden_state"], got)), 2)
        rows[row["lookup_tables"]] = row
        print(row, flush=True)
    elements = sum(int(np.prod(s.shape)) for s in lowered.weight_specs)
    path = write_json("text_encoder_bits", {
        "model": "SD 1.5-shaped CLIPTextModel (real config, random weights, seed 0)", "quant": scheme.name,
        "weights": elements, "runs": list(rows.values()),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
