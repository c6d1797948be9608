"""Quantizers on real weights trained in this repo: the autoencoder's TAESD-shaped decoder
(examples/autoencoder, trained on scikit-learn's sample photos) and the digits DiT.

    python benchmarks/quant_real.py [--schemes w8,w4g32,...] [--test 128] [--calibration 4]

Decoder: each scheme is built with edgegen.build_module (calibration: latents of training patches,
`--calibration` batches), run by edgegen.runtimes.load_module on latents of held-out patches, and
compared with the float32 torch decoder: PSNR of the decoded images (peak 1). Each calibrated
scheme is printed beside its round-to-nearest form (<scheme>-rtn), with the method each layer took.
Digits: the figures of examples/digits/quant_eval.py (class accuracy, sample PSNR against float32
torch), read from benchmarks/results/digits_quant_*.json when such runs have been made:

    python examples/digits/quant_eval.py --schemes w4g32-rtn,w4g32,w4g128-rtn,w4g128,pal4-rtn,pal4 \\
        --out benchmarks/results/digits_quant_methods.json

Targets (issue 23): w4g32 >= w4g32-rtn + 3 dB, pal4 >= w4g128 + 1 dB. Writes
benchmarks/results/quant_real.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "autoencoder"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_json  # noqa: E402

SCHEMES = ("w8-rtn", "w8", "w4g32-rtn", "w4g32", "w4g128-rtn", "w4g128", "pal4-rtn", "pal4")
BATCH = 8


def decoder_rows(schemes, n_test: int, n_calibration: int) -> list[dict]:
    import torch
    import train as autoencoder

    import edgegen
    from edgegen.core import psnr

    enc, dec = autoencoder.load()
    train, test = autoencoder.patches()
    with torch.no_grad():
        latents = enc(torch.from_numpy(test[:n_test])).numpy()
        calibration = [{"input": enc(torch.from_numpy(train[i * BATCH:(i + 1) * BATCH])).numpy()}
                       for i in range(n_calibration)]
        reference = dec(torch.from_numpy(latents)).numpy()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for scheme in schemes:
            t0 = time.perf_counter()
            report = edgegen.build_module(dec, {"input": latents[:BATCH]}, Path(tmp) / scheme, quant=scheme,
                                          calibration=calibration)
            build_s = time.perf_counter() - t0
            with edgegen.runtimes.load_module(Path(tmp) / scheme) as run:
                out = np.concatenate([run(input=latents[i:i + BATCH])["output"]
                                      for i in range(0, len(latents), BATCH)])
            quant = report.components["module"]["quant"]
            methods = Counter(lay.get("method", "fp32") for lay in quant["layers"])
            rows.append({"model": "autoencoder decoder", "scheme": scheme,
                         "psnr_db": round(psnr(reference, out, 1.0), 2),
                         "bits_per_weight_quantized": quant["bits_per_weight_quantized"],
                         "methods": dict(methods), "build_s": round(build_s, 1)})
            print(f"decoder  {scheme:12s} {rows[-1]['psnr_db']:6.2f} dB  "
                  f"{quant['bits_per_weight_quantized']:.2f} bits/weight  methods {dict(methods)}", flush=True)
    return rows


def targets(rows: list[dict], key: str) -> dict:
    """The issue's two targets on one model's rows (key: the figure compared)."""
    got = {r["scheme"]: r[key] for r in rows if r.get(key) is not None}
    checks = {}
    if {"w4g32", "w4g32-rtn"} <= set(got):
        checks["w4g32 - w4g32-rtn (dB, target >= 3)"] = round(got["w4g32"] - got["w4g32-rtn"], 2)
    if {"pal4", "w4g128"} <= set(got):
        checks["pal4 - w4g128 (dB, target >= 1)"] = round(got["pal4"] - got["w4g128"], 2)
    if {"pal4-rtn", "w4g128-rtn"} <= set(got):
        checks["before: pal4-rtn - w4g128-rtn (dB)"] = round(got["pal4-rtn"] - got["w4g128-rtn"], 2)
    return checks


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--schemes", default=",".join(SCHEMES))
    parser.add_argument("--test", type=int, default=128, help="held-out patches decoded (a multiple of 8)")
    parser.add_argument("--calibration", type=int, default=4, help="batches of 8 training patches")
    args = parser.parse_args()
    rows = decoder_rows(args.schemes.split(","), args.test, args.calibration)
    result = {"decoder": {"rows": rows, "targets": targets(rows, "psnr_db")}}
    files = sorted((ROOT / "benchmarks" / "results").glob("digits_quant_*.json"), key=lambda p: p.stat().st_mtime)
    merged = {}      # scheme -> row, the newest run's where several measured it
    for path in files:
        for r in json.loads(path.read_text())["rows"]:
            if "psnr_vs_fp32_torch_db" not in r:     # the torch sampler's own row
                continue
            merged[r["scheme"]] = {"scheme": r["scheme"], "psnr_db": r["psnr_vs_fp32_torch_db"],
                                   "accuracy": r["class_accuracy"], "source": path.name}
    if merged:
        drows = list(merged.values())
        result["digits"] = {"rows": drows, "targets": targets(drows, "psnr_db")}
        for r in drows:
            print(f"digits   {str(r['scheme']):12s} {r['psnr_db']} dB  accuracy {r['accuracy']}")
    for model, entry in result.items():
        for name, value in entry["targets"].items():
            print(f"{model}: {name}: {value}")
    write_json("quant_real", result)


if __name__ == "__main__":
    main()
