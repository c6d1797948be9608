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
    method: str = "rtn"      # how the stored values were chosen (METHODS)

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


def _assign(values: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Per row, the index of the nearest centroid (centroids sorted along each row): one searchsorted over
    the midpoints of all rows at once, each row shifted past the one before."""
    rows, k = centroids.shape
    lo = min(float(values.min()), float(centroids.min()))
    span = max(float(values.max()), float(centroids.max())) - lo + 1.0
    shift = (np.arange(rows, dtype=np.float64) * span)[:, None]
    mids = ((centroids[:, 1:] + centroids[:, :-1]) / 2 - lo + shift).ravel()
    flat = np.searchsorted(mids, (values - lo + shift).ravel())
    return (flat.reshape(values.shape) - (k - 1) * np.arange(rows)[:, None]).astype(np.int64)


def _kmeans_1d(values: np.ndarray, k: int, iters: int = 12, weights: np.ndarray | None = None) -> tuple:
    """Per-row 1-D k-means (Lloyd; rows of `values`), initialised at quantiles, each value counted with
    its `weights` (None: all 1). O(values) per iteration (sorted centroids: nearest by midpoints; sums
    by bincount), so SD-sized layers take seconds. Returns ([rows, k] centroids, [rows, n] indices)."""
    v = np.asarray(values, np.float64)
    rows = v.shape[0]
    wts = np.ones_like(v) if weights is None else np.broadcast_to(np.asarray(weights, np.float64), v.shape)
    centroids = np.sort(np.quantile(v, (np.arange(k) + 0.5) / k, axis=1).T, axis=1)
    offsets = (np.arange(rows) * k)[:, None]
    for _ in range(iters):
        idx = _assign(v, centroids)
        flat = (idx + offsets).ravel()
        counts = np.bincount(flat, wts.ravel(), rows * k).reshape(rows, k)
        sums = np.bincount(flat, (wts * v).ravel(), rows * k).reshape(rows, k)
        centroids = np.sort(np.where(counts > 0, sums / np.maximum(counts, 1e-300), centroids), axis=1)
    lut = centroids.astype(np.float16).astype(np.float64)   # assign against the stored (fp16) table
    return lut.astype(np.float32), _assign(v, lut)


def group_size(scheme: Scheme, width: int) -> int:
    """The scheme's group along a row of `width` weights: a row narrower than the group is one group
    (padding it would store codes for weights that do not exist)."""
    return min(scheme.group, width)


def quantize_weight(w: np.ndarray, scheme: Scheme, out_axis: int = 0, stats: "LayerStats | None" = None) -> Packed:
    """Quantize one weight tensor; `out_axis` is its output-channel axis (0 for conv [O, I, kh, kw],
    1 for a linear weight stored [in, out]). `stats`: the second moments of the layer's input
    (calibration), which the calibrated methods minimise the layer's output error with; without them
    they weigh every input alike. The scheme's `method` says which (see METHODS)."""
    shape = tuple(w.shape)
    if scheme.activations or scheme.kind == "mixed":
        raise ValueError(f"{scheme.name}: not a weight-only scheme (w8a8 and mixed need the model, not one tensor)")
    if scheme.kind == "float16":
        return Packed(scheme.name, shape, {"w": np.asarray(w, np.float16)}, "cast")
    if scheme.method == "rtn":
        return _quantize_rtn(w, scheme, out_axis)
    m = _rows(w, out_axis)
    candidates = [_quantize_rtn(w, scheme, out_axis)] + [
        _QUANTIZERS[method](m, scheme, stats, shape) for method in METHODS[scheme.kind][1:]
        if not method.startswith("gptq") or (stats is not None and stats.hessian is not None)]
    errors = [layer_error(m, _rows(dequantize_weight(p, out_axis), out_axis), stats) for p in candidates]
    return candidates[int(np.argmin(errors))]


def _quantize_rtn(w: np.ndarray, scheme: Scheme, out_axis: int) -> Packed:
    """The method before calibration: absmax scales (ternary: absmean), plain k-means palettes."""
    shape = tuple(w.shape)
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
        lut, idx = _kmeans_1d(m.reshape(rows // share, share * width), 2 ** scheme.bits)
        return Packed(scheme.name, shape, {"codes": _pack(idx.reshape(rows, width), scheme.bits),
                                           "lut": lut.astype(np.float16)}, "kmeans")
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


# ---- calibrated methods: the same stored forms, values chosen to minimise the layer's output error ----

# per kind, the methods `best` measures (the first is the round-to-nearest / plain k-means one)
METHODS = {"linear": ("rtn", "search", "gptq"), "ternary": ("rtn", "search", "gptq"),
           "palette": ("kmeans", "weighted-kmeans", "gptq-palette")}
# clipping ratios the scale search tries, of the group's absmax (ternary: its codes reach only +-1)
CLIP_GRID = np.linspace(1.0, 0.55, 10)
TERNARY_GRID = np.linspace(1.0, 0.2, 17)
GPTQ_DAMP = 0.01          # of the Hessian's mean diagonal, added to it (GPTQ's percdamp)
HESSIAN_MAX_WIDTH = 8192  # wider reductions keep only the Hessian's diagonal (no GPTQ): K*K floats each
PALETTE_REFITS = 2        # rounds of (refit the tables for the assignments, assign again with GPTQ)
REFIT_MAX_FLOPS = 4e9     # a layer whose refit costs more (rows * width^2 * entries) keeps its k-means tables


@dataclass
class LayerStats:
    """The second moments of a layer's input along its weight's reduction axis (a conv's im2col view,
    [in/groups * kh * kw] in the weight's order), over the calibration inputs: `hessian` E[x x^T]
    (None where too wide) and its diagonal `diag` E[x^2]. A weight error d of one output row costs
    d H d^T in that output's mean squared error."""
    diag: np.ndarray
    hessian: np.ndarray | None = None
    # per output channel r, how much the component's output moves with this layer's output: E over
    # random probes v of sum over positions of (d(v . y)/d a[p, r])^2 / len(y), y the outputs each over
    # its peak (Hutchinson's estimate of the Jacobian's squared norm); None where not measured
    gain: np.ndarray | None = None

    @classmethod
    def of(cls, x: np.ndarray, full: bool | None = None) -> "LayerStats":
        """From input rows x [samples, reduction]; `full` keeps the Hessian (default: up to
        HESSIAN_MAX_WIDTH)."""
        x = np.asarray(x, np.float64)
        full = x.shape[1] <= HESSIAN_MAX_WIDTH if full is None else full
        return cls((x * x).mean(axis=0), x.T @ x / len(x) if full else None)


def row_errors(m: np.ndarray, approx: np.ndarray, stats: LayerStats | None) -> np.ndarray:
    """Per output channel, the mean squared error of the layer's output when weights `m` ([rows,
    reduction]) are replaced by `approx`, on the calibration inputs `stats` summarises (without them:
    the weights' own error)."""
    d = np.asarray(m, np.float64) - approx
    if stats is None:
        return np.mean(d * d, axis=1)
    if stats.hessian is not None:
        return np.sum((d @ stats.hessian) * d, axis=1)       # one matrix product (BLAS), not an einsum loop
    return np.sum(d * d * stats.diag[None, :], axis=1)


def layer_error(m: np.ndarray, approx: np.ndarray, stats: LayerStats | None) -> float:
    """The mean squared error of the layer's output (all channels) when weights `m` are replaced by `approx`."""
    return float(np.mean(row_errors(m, approx, stats)))


def output_error(m: np.ndarray, approx: np.ndarray, stats: LayerStats) -> float:
    """The component output's mean squared error (each output over its peak) when only this layer's
    weights `m` are replaced by `approx`, predicted from its statistics without running anything: each
    output channel's error (d H d^T) times its gain. First order, and it counts an error's positions
    as independent: `mixed:<dB>` checks its sums by running the component."""
    if stats.gain is None:
        raise ValueError("output_error needs LayerStats.gain: collect the statistics with probes > 0 "
                         "(converters/layer_stats.collect)")
    return float(np.dot(stats.gain, row_errors(m, approx, stats)))


def _grid(scheme: Scheme, width: int) -> tuple:
    """(bits, lowest code, highest code, group) of a linear or ternary scheme's integer grid."""
    if scheme.kind == "ternary":
        return 2, -1, 1, group_size(scheme, width)
    if scheme.group is None:
        return 8, -127, 127, width
    return 4, -8, 7, group_size(scheme, width)


def _half(x: np.ndarray) -> np.ndarray:
    """Scales as stored (float16), never zero: codes are computed against what the kernel reads."""
    return np.maximum(np.asarray(x, np.float32).astype(np.float16).astype(np.float64), 2.0 ** -24)


def _best_scales(groups: np.ndarray, weight: np.ndarray, lo: int, hi: int, ternary: bool) -> np.ndarray:
    """Per group (last axis of `groups`, [..., g]), the scale among clipped absmax candidates (and the
    round-to-nearest one) with the least error weighted by `weight` (broadcast to `groups`)."""
    absmax = np.abs(groups).max(axis=-1, keepdims=True)
    base = np.abs(groups).mean(axis=-1, keepdims=True) if ternary else absmax / hi
    best, best_err = None, None
    for scale in [base] + [absmax * ratio / hi for ratio in (TERNARY_GRID if ternary else CLIP_GRID)]:
        sc = _half(scale)
        err = ((groups - np.clip(np.round(groups / sc), lo, hi) * sc) ** 2 * weight).sum(axis=-1, keepdims=True)
        if best is None:
            best, best_err = sc, err
            continue
        better = err < best_err
        best, best_err = np.where(better, sc, best), np.where(better, err, best_err)
    return best


def _store_grid(q: np.ndarray, scale: np.ndarray, scheme: Scheme, shape: tuple, method: str) -> Packed:
    """Integer codes q ([rows, groups * g], padded) and scales ([rows, groups]) in the scheme's stored form."""
    width = int(np.prod(shape)) // q.shape[0]
    bits, lo, _, _ = _grid(scheme, width)
    if bits == 8:
        return Packed(scheme.name, shape, {"q": q[:, :width].astype(np.int8), "scale": scale.astype(np.float16)},
                      method)
    return Packed(scheme.name, shape, {"codes": _pack(q - lo, bits), "scale": scale.astype(np.float16)}, method)


def _search(m: np.ndarray, scheme: Scheme, stats: LayerStats | None, shape: tuple) -> Packed:
    """Per-group scale (clipping) search: the scale that minimises the group's error weighted by the
    input's second moments E[x^2] (the layer output's error, ignoring cross terms)."""
    rows, width = m.shape
    _, lo, hi, g = _grid(scheme, width)
    pad = -width % g
    groups = np.pad(np.asarray(m, np.float64), ((0, 0), (0, pad))).reshape(rows, -1, g)
    diag = np.ones(width) if stats is None else np.maximum(stats.diag, 0) + 1e-12
    weight = np.pad(diag, (0, pad)).reshape(1, -1, g)
    scale = _best_scales(groups, weight, lo, hi, scheme.kind == "ternary")
    q = np.clip(np.round(groups / scale), lo, hi).reshape(rows, -1).astype(np.int64)
    return _store_grid(q, scale[..., 0], scheme, shape, "search")


def _gptq(m: np.ndarray, scheme: Scheme, stats: LayerStats, shape: tuple) -> Packed:
    """GPTQ (Frantar et al. 2022): quantize the reduction columns in order, each one's rounding error
    spread over the columns not yet quantized through the inverse Hessian's Cholesky factor; each
    group's scale searched (as _search) on the weights as they stand when the group is reached.
    Updates inside a group are immediate, to later groups lazy (one matrix product per group)."""
    rows, width = m.shape
    _, lo, hi, g = _grid(scheme, width)
    w = np.asarray(m, np.float64).copy()
    h = np.asarray(stats.hessian, np.float64).copy()
    dead = np.diag(h) <= 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h[np.diag_indices(width)] += GPTQ_DAMP * np.mean(np.diag(h))
    u = np.linalg.cholesky(np.linalg.inv(h)).T            # upper: inv(H) = U^T U
    q = np.zeros((rows, width + (-width % g)), np.int64)
    scales = np.zeros((rows, q.shape[1] // g))
    diag = np.diag(h)
    for j0 in range(0, width, g):
        j1 = min(j0 + g, width)
        block = w[:, j0:j1]
        scale = _best_scales(block[:, None, :], diag[None, None, j0:j1], lo, hi, scheme.kind == "ternary")[:, 0, 0]
        scales[:, j0 // g] = scale
        errors = np.zeros((rows, j1 - j0))
        for i in range(j0, j1):
            code = np.clip(np.round(w[:, i] / scale), lo, hi)
            q[:, i] = code
            err = (w[:, i] - code * scale) / u[i, i]
            w[:, i + 1:j1] -= np.outer(err, u[i, i + 1:j1])
            errors[:, i - j0] = err
        w[:, j1:] -= errors @ u[j0:j1, j1:]
    return _store_grid(q, scales, scheme, shape, "gptq")


def _weighted_palette(m: np.ndarray, scheme: Scheme, stats: LayerStats | None, shape: tuple) -> Packed:
    """Sensitivity-weighted k-means (SqueezeLLM): each weight counts by how much its error moves the
    layer's output, E[x^2] of the input it multiplies."""
    rows, width = m.shape
    share = palette_share(rows, width, scheme.bits)
    diag = np.ones(width) if stats is None else np.maximum(stats.diag, 0) + 1e-12 * max(float(stats.diag.max()), 1)
    weights = np.tile(diag, (rows // share, share))
    lut, idx = _kmeans_1d(m.reshape(rows // share, share * width), 2 ** scheme.bits, weights=weights)
    return Packed(scheme.name, shape, {"codes": _pack(idx.reshape(rows, width), scheme.bits),
                                       "lut": lut.astype(np.float16)}, "weighted-kmeans")


def _gptq_palette(m: np.ndarray, scheme: Scheme, stats: LayerStats, shape: tuple) -> Packed:
    """GPTQ's error feedback over a palette: the tables from sensitivity-weighted k-means, then the
    columns assigned in order, each to the nearest entry of its row's table, its rounding error spread
    over the columns not yet assigned (as _gptq)."""
    rows, width = m.shape
    lut = _weighted_palette(m, scheme, stats, shape).arrays["lut"].astype(np.float64)
    share = rows // lut.shape[0]
    h = np.asarray(stats.hessian, np.float64).copy()
    dead = np.diag(h) <= 0
    h[dead, dead] = 1.0
    h[np.diag_indices(width)] += GPTQ_DAMP * np.mean(np.diag(h))
    u = np.linalg.cholesky(np.linalg.inv(h)).T
    best = None
    refits = PALETTE_REFITS if rows * width * width * lut.shape[1] <= REFIT_MAX_FLOPS else 0
    for _ in range(refits + 1):
        idx = _gptq_assign(np.asarray(m, np.float64), np.repeat(lut, share, axis=0), u)
        err = layer_error(m, np.take_along_axis(np.repeat(lut, share, axis=0), idx, axis=1), stats)
        if best is None or err < best[0]:
            best = (err, idx, lut)
        lut = _refit_tables(np.asarray(m, np.float64), idx, lut, share, np.asarray(stats.hessian, np.float64))
    _, idx, lut = best
    return Packed(scheme.name, shape, {"codes": _pack(idx, scheme.bits), "lut": lut.astype(np.float16)},
                  "gptq-palette")


def _gptq_assign(w: np.ndarray, table: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Per row, the table index of each column, assigned in order with GPTQ's error feedback."""
    rows, width = w.shape
    w = w.copy()
    idx = np.zeros((rows, width), np.int64)
    for j0 in range(0, width, 128):
        j1 = min(j0 + 128, width)
        errors = np.zeros((rows, j1 - j0))
        for i in range(j0, j1):
            code = np.abs(w[:, i:i + 1] - table).argmin(axis=1)
            idx[:, i] = code
            err = (w[:, i] - table[np.arange(rows), code]) / u[i, i]
            w[:, i + 1:j1] -= np.outer(err, u[i, i + 1:j1])
            errors[:, i - j0] = err
        w[:, j1:] -= errors @ u[j0:j1, j1:]
    return idx


def _refit_tables(w: np.ndarray, idx: np.ndarray, lut: np.ndarray, share: int, h: np.ndarray) -> np.ndarray:
    """The table values that minimise the layer-output error sum_r (w_r - c[idx_r]) H (w_r - c[idx_r])^T
    for the assignments `idx` (a least-squares problem of k unknowns per table), stored as float16."""
    k = lut.shape[1]
    out = lut.copy()
    for t in range(lut.shape[0]):
        a, b = np.zeros((k, k)), np.zeros(k)
        for r in range(t * share, (t + 1) * share):
            onehot = np.eye(k)[idx[r]]                      # [width, k]
            he = h @ onehot
            a += onehot.T @ he
            b += he.T @ w[r]
        used = np.diag(a) > 0
        if used.any():
            sol = np.linalg.lstsq(a[np.ix_(used, used)], b[used], rcond=None)[0]
            out[t, used] = sol
    return out.astype(np.float16).astype(np.float64)


# ---- AWQ-style input-channel scaling: W x = (W diag(s)) (x / s), the scaled weight quantized ----

# exponents a of the scales s = E[x^2]^(a/2) (per input channel, then centred) that are tried
AWQ_GRID = np.linspace(0.125, 1.0, 8)


def scaled_stats(stats: LayerStats, cols: np.ndarray) -> LayerStats:
    """The statistics of the input x / cols (one factor per reduction column)."""
    inv = 1.0 / np.asarray(cols, np.float64)
    return LayerStats(stats.diag * inv * inv, None if stats.hessian is None else stats.hessian * np.outer(inv, inv),
                      stats.gain)


def input_scales(m: np.ndarray, scheme: Scheme, stats: LayerStats, channels: int) -> np.ndarray | None:
    """AWQ (Lin et al. 2023): per input channel, the scale s that weighs the channels the input drives
    hardest more in the quantized weight W diag(s), the input divided by s before the layer. The
    exponent of s = E[x^2]^(a/2) is searched on AWQ_GRID with the cheap method (the scale search;
    palettes: weighted k-means); returns
    s ([channels]; each repeats over a conv's kh x kw columns) or None where no exponent lowers the
    layer's output error below the unscaled weight's."""
    rows, width = m.shape
    if width % channels:
        raise ValueError(f"reduction width {width} is not a multiple of {channels} input channels")
    taps = width // channels
    energy = np.maximum(stats.diag.reshape(channels, taps).mean(axis=1), 0)
    if not np.any(energy > 0):
        return None
    energy = np.maximum(energy, 1e-6 * energy.max())
    cheap = _weighted_palette if scheme.kind == "palette" else _search
    best, best_err = None, layer_error(m, _rows(dequantize_weight(cheap(m, scheme, stats, m.shape)), 0), stats)
    for a in AWQ_GRID:
        s = energy ** (a / 2)
        s = s / np.sqrt(s.max() * s.min())
        cols = np.repeat(s, taps)
        approx = _rows(dequantize_weight(cheap(m * cols, scheme, scaled_stats(stats, cols), m.shape)), 0) / cols
        err = layer_error(m, approx, stats)
        if err < best_err:
            best, best_err = s, err
    return best


def quantize_scaled(w: np.ndarray, scheme: Scheme, stats: LayerStats | None, channels: int) -> tuple:
    """quantize_weight (output axis 0) with AWQ's input-channel scales where they lower the layer's output
    error: (Packed of W diag(s), s per input channel) then, its method marked "+awq"; else (Packed of W,
    None). Only the calibrated methods (not -rtn) of the weight-only kinds, and only with `stats`."""
    base = quantize_weight(w, scheme, stats=stats)
    if stats is None or scheme.method == "rtn" or scheme.kind not in ("linear", "palette", "ternary"):
        return base, None
    m = _rows(w, 0)
    s = input_scales(m, scheme, stats, channels)
    if s is None:
        return base, None
    cols = np.repeat(s, m.shape[1] // channels)
    scaled = quantize_weight(_unrows(m * cols, w.shape, 0).astype(np.float32), scheme,
                             stats=scaled_stats(stats, cols))
    if layer_error(m, _rows(dequantize_weight(scaled), 0) / cols, stats) >= \
            layer_error(m, _rows(dequantize_weight(base), 0), stats):
        return base, None
    scaled.method += "+awq"
    return scaled, s.astype(np.float32)


_QUANTIZERS = {"search": _search, "gptq": _gptq, "weighted-kmeans": _weighted_palette,
               "gptq-palette": _gptq_palette}
