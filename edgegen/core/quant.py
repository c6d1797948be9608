"""Quantization schemes: one registry of names, shared by every target.

A target maps each scheme onto its own tools (onnxruntime's quantizers, coremltools'
compression) or says why it has no equivalent; the scheme's name and what was
actually applied go into the manifest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Scheme:
    name: str
    kind: str              # float16 | linear | palette | ternary | mixed
    bits: int | None       # nominal bits per weight, before scales/LUTs
    group: int | None = None
    activations: bool = False
    target_db: float | None = None   # mixed:<dB> only
    description: str = ""


SCHEMES: dict[str, Scheme] = {s.name: s for s in (
    Scheme("fp16", "float16", 16, description="float16 weights and compute"),
    Scheme("w8", "linear", 8, description="int8 weights, symmetric, one scale per output channel"),
    Scheme("w4g32", "linear", 4, group=32, description="int4 weights in groups of 32 with fp16 scales"),
    Scheme("w4g64", "linear", 4, group=64, description="int4 weights in groups of 64 with fp16 scales"),
    Scheme("w4g128", "linear", 4, group=128, description="int4 weights in groups of 128 with fp16 scales"),
    Scheme("pal4", "palette", 4, description="k-means palettization: 16-entry lookup table per output channel"),
    Scheme("pal6", "palette", 6, description="k-means palettization: 64-entry lookup table per output channel"),
    Scheme("ternary", "ternary", 2, group=64, description="{-1, 0, +1} weights with one scale per group"),
    Scheme("w8a8", "linear", 8, activations=True,
           description="int8 weights and int8 activations (per-tensor scales from calibration)"),
)}
_MIXED = re.compile(r"^mixed:(\d+(?:\.\d+)?)$")


def parse(name: str) -> Scheme:
    """The scheme for a CLI/API name: one of SCHEMES, or mixed:<dB> (e.g. mixed:30)."""
    if name in SCHEMES:
        return SCHEMES[name]
    m = _MIXED.match(name or "")
    if m:
        return Scheme(name, "mixed", None, target_db=float(m.group(1)),
                      description=f"per-layer bit widths chosen to keep the output above {m.group(1)} dB PSNR")
    raise ValueError(f"unknown quantization scheme {name!r}; choose one of {sorted(SCHEMES)} or mixed:<dB>")
