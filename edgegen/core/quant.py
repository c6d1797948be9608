"""Quantization schemes: one registry of names, shared by every target.

A target maps each scheme onto its own tools (onnxruntime's quantizers, coremltools'
compression) or says why it has no equivalent; the scheme's name and what was
actually applied go into the manifest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np


# A quantized component or image is gated at this floor only: below it the output is noise (a
# broken conversion), not a loss of precision. The measured PSNR is recorded either way.
QUANT_FLOOR_DB = 10.0


@dataclass(frozen=True)
class Scheme:
    name: str
    kind: str              # float16 | linear | palette | ternary | mixed
    bits: int | None       # nominal bits per weight, before scales/LUTs
    group: int | None = None
    activations: bool = False
    target_db: float | None = None   # mixed:<dB> only
    description: str = ""
    # how the stored values are chosen (the stored form is the same): "best" measures METHODS[kind] on
    # each layer and keeps the one with the least layer-output error; "rtn" is round-to-nearest with
    # absmax scales (linear, ternary: absmean) and plain k-means palettes, the method before calibration
    method: str = "best"


SCHEMES: dict[str, Scheme] = {s.name: s for s in (
    Scheme("fp16", "float16", 16, description="float16 weights and compute"),
    Scheme("w8", "linear", 8, description="int8 weights, symmetric, one scale per output channel"),
    Scheme("w4g32", "linear", 4, group=32, description="int4 weights in groups of 32 with fp16 scales"),
    Scheme("w4g64", "linear", 4, group=64, description="int4 weights in groups of 64 with fp16 scales"),
    Scheme("w4g128", "linear", 4, group=128, description="int4 weights in groups of 128 with fp16 scales"),
    Scheme("pal4", "palette", 4, description="k-means palettization: a 16-entry lookup table per output channel "
                                              "(shared by a few channels on narrow layers)"),
    Scheme("pal6", "palette", 6, description="k-means palettization: a 64-entry lookup table per output channel "
                                              "(shared by a few channels on narrow layers)"),
    Scheme("ternary", "ternary", 2, group=64, description="{-1, 0, +1} weights with one scale per group"),
    Scheme("w8a8", "linear", 8, activations=True, method="rtn",
           description="int8 weights and int8 activations (per-tensor scales from calibration)"),
)}
# each weight-only scheme's old method under <name>-rtn, for comparison: same stored form, same kernels
SCHEMES.update({f"{s.name}-rtn": Scheme(f"{s.name}-rtn", s.kind, s.bits, s.group, description=s.description
                                        + " (round-to-nearest, absmax scales / plain k-means)", method="rtn")
                for s in list(SCHEMES.values()) if s.kind in ("linear", "palette", "ternary") and not s.activations})
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


# ---- weight quantizers (numpy): pack once at build time, dequantize in a kernel or at load ----

@dataclass
class Packed:
    """A weight in a scheme's stored form. `arrays` holds what is written (packed codes, scales,
    lookup tables); `bits_per_weight` counts every stored bit over the weight's elements."""
    scheme: str
    shape: tuple
    arrays: dict

    @property
    def bits_per_weight(self) -> float:
        return 8 * sum(a.nbytes for a in self.arrays.values()) / int(np.prod(self.shape))


def _rows(w: np.ndarray, out_axis: int) -> np.ndarray:
    """The weight as [output channels, reduction] (the axis each scale or table serves)."""
    return np.moveaxis(np.asarray(w, np.float32), out_axis, 0).reshape(w.shape[out_axis], -1)


def _unrows(m: np.ndarray, shape: tuple, out_axis: int) -> np.ndarray:
    moved = (shape[out_axis],) + tuple(d for i, d in enumerate(shape) if i != out_axis)
    return np.moveaxis(m.reshape(moved), 0, out_axis)


def _pack(codes: np.ndarray, bits: int) -> np.ndarray:
    """Unsigned codes < 2**bits, packed little-end first into bytes (bits in 2, 4, 6, 8)."""
    flat = codes.astype(np.uint32).ravel()
    per = {2: 4, 4: 2, 8: 1}.get(bits)
    if per is not None:
        flat = np.pad(flat, (0, -len(flat) % per)).reshape(-1, per)
        return (flat << (bits * np.arange(per, dtype=np.uint32))).sum(axis=1).astype(np.uint8)
    flat = np.pad(flat, (0, -len(flat) % 4)).reshape(-1, 4)          # 6 bits: 4 codes in 3 bytes
    word = (flat << (6 * np.arange(4, dtype=np.uint32))).sum(axis=1)
    return np.stack([(word >> s) & 0xFF for s in (0, 8, 16)], axis=1).astype(np.uint8).ravel()


def _unpack(data: np.ndarray, bits: int, count: int) -> np.ndarray:
    if bits == 6:
        b = data.reshape(-1, 3).astype(np.uint32)
        word = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        codes = (word[:, None] >> (6 * np.arange(4, dtype=np.uint32))) & 0x3F
    else:
        per = 8 // bits
        codes = (data.astype(np.uint32)[:, None] >> (bits * np.arange(per, dtype=np.uint32))) & ((1 << bits) - 1)
    return codes.ravel()[:count]


# a palette's fp16 lookup table may cost at most this many bits per weight; narrower layers share
# one table between consecutive output channels (as Core ML's per-grouped-channel palettization)
PALETTE_TABLE_BITS = 0.25


def palette_share(rows: int, width: int, bits: int) -> int:
    """How many consecutive output channels share one table: the fewest (a divisor of `rows`) that
    keep the table under PALETTE_TABLE_BITS per weight; 1 (a table per channel) on wide layers."""
    for share in range(1, rows + 1):
        if rows % share == 0 and (2 ** bits) * 16 / (share * width) <= PALETTE_TABLE_BITS:
            return share
    return rows


def _kmeans_1d(values: np.ndarray, k: int, iters: int = 12) -> np.ndarray:
    """Per-row 1-D k-means (rows of `values`), initialised at quantiles; returns [rows, k] centroids."""
    centroids = np.quantile(values, (np.arange(k) + 0.5) / k, axis=1).T.astype(np.float32)
    for _ in range(iters):
        idx = np.abs(values[:, :, None] - centroids[:, None, :]).argmin(axis=2)
        for j in range(k):
            mask = idx == j
            counts = mask.sum(axis=1)
            sums = np.where(mask, values, 0).sum(axis=1)
            centroids[:, j] = np.where(counts > 0, sums / np.maximum(counts, 1), centroids[:, j])
    return centroids


def group_size(scheme: Scheme, width: int) -> int:
    """The scheme's group along a row of `width` weights: a row narrower than the group is one group
    (padding it would store codes for weights that do not exist)."""
    return min(scheme.group, width)


def quantize_weight(w: np.ndarray, scheme: Scheme, out_axis: int = 0) -> Packed:
    """Quantize one weight tensor; `out_axis` is its output-channel axis (0 for conv [O, I, kh, kw],
    1 for a linear weight stored [in, out])."""
    shape = tuple(w.shape)
    if scheme.activations or scheme.kind == "mixed":
        raise ValueError(f"{scheme.name}: not a weight-only scheme (w8a8 and mixed need the model, not one tensor)")
    if scheme.kind == "float16":
        return Packed(scheme.name, shape, {"w": np.asarray(w, np.float16)})
    m = _rows(w, out_axis)
    rows, width = m.shape
    if scheme.kind == "linear" and scheme.group is None:            # w8: a scale per output channel
        scale = np.maximum(np.abs(m).max(axis=1, keepdims=True), 1e-12) / 127
        q = np.clip(np.round(m / scale), -127, 127).astype(np.int8)
        return Packed(scheme.name, shape, {"q": q, "scale": scale.astype(np.float16)})
    if scheme.kind in ("linear", "ternary"):                         # groups along the reduction axis
        g = group_size(scheme, width)
        padded = np.pad(m, ((0, 0), (0, -width % g))).reshape(rows, -1, g)
        if scheme.kind == "ternary":                                 # absmean scale, codes {-1, 0, 1}
            valid = np.pad(np.ones(width), (0, -width % g)).reshape(-1, g).sum(axis=1)[None, :, None]
            scale = np.maximum(np.abs(padded).sum(axis=2, keepdims=True) / valid, 1e-12)   # padding excluded
            codes = np.clip(np.round(padded / scale), -1, 1) + 1
            bits = 2
        else:                                                        # int4 symmetric, codes -8..7
            scale = np.maximum(np.abs(padded).max(axis=2, keepdims=True), 1e-12) / 7
            codes = np.clip(np.round(padded / scale), -8, 7) + 8
            bits = 4
        return Packed(scheme.name, shape, {"codes": _pack(codes, bits), "scale": scale[..., 0].astype(np.float16)})
    if scheme.kind == "palette":                                     # a 2**bits table per channel group
        share = palette_share(rows, width, scheme.bits)
        groups = m.reshape(rows // share, share * width)
        lut = _kmeans_1d(groups, 2 ** scheme.bits)
        idx = np.abs(groups[:, :, None] - lut[:, None, :]).argmin(axis=2).reshape(rows, width)
        return Packed(scheme.name, shape, {"codes": _pack(idx, scheme.bits), "lut": lut.astype(np.float16)})
    raise ValueError(f"{scheme.name}: no weight quantizer for kind {scheme.kind!r}")


def dequantize_weight(p: Packed, out_axis: int = 0) -> np.ndarray:
    """The float32 weight a Packed stands for."""
    scheme = parse(p.scheme)
    if scheme.kind == "float16":
        return p.arrays["w"].astype(np.float32)
    rows = p.shape[out_axis]
    width = int(np.prod(p.shape)) // rows
    if scheme.kind == "linear" and scheme.group is None:
        m = p.arrays["q"].astype(np.float32) * p.arrays["scale"].astype(np.float32)
    elif scheme.kind in ("linear", "ternary"):
        scale = p.arrays["scale"].astype(np.float32)
        bits, offset = (2, 1) if scheme.kind == "ternary" else (4, 8)
        g = group_size(scheme, width)
        codes = _unpack(p.arrays["codes"], bits, scale.size * g).reshape(*scale.shape, g)
        m = ((codes.astype(np.float32) - offset) * scale[..., None]).reshape(rows, -1)[:, :width]
    else:
        lut = np.repeat(p.arrays["lut"].astype(np.float32), rows // p.arrays["lut"].shape[0], axis=0)
        idx = _unpack(p.arrays["codes"], scheme.bits, rows * width).reshape(rows, width)
        m = np.take_along_axis(lut, idx, axis=1)
    return _unrows(m, p.shape, out_axis)
