"""Kernel `edgegen.cpu_winograd_conv2d`: Winograd F(4x4, 3x3) for the CPU target's 3x3, stride-1
convolutions, with every step a GEMM or a copy.

Each 4x4 output tile comes from a 6x6 input tile with 36 multiplies per input/output channel pair
instead of 144 (F(2x2, 3x3), kernels/winograd.py's form for the GPU plans, saves 2.25x; this one
4x). The weights are transformed once, at build time (U = G·g·Gᵀ, stored as the artifact's weight
in a (36, K, C) layout). The transforms, written as kernels/winograd.py writes them (a sum of
constant-coefficient terms selected per element), would not vectorize on a CPU; here each is two
small GEMMs by a constant matrix (Bᵀ·d·B as Bᵀ applied to the rows, then to the columns: 12
multiply-adds per element where the 36x36 Kronecker matrix takes 36; measured 2x faster), which
kernels/cpu_loops.py tiles like any GEMM:
1. gather: x (N, C, H, W) -> D (6, 6, C, P), the 6x6 tile around each of P = N·TH·TW output
   tiles (zero padding included; a copy);
2. V = Bᵀ·D over the tile's rows, then over its columns: (36, C, P);
3. M = U · V, 36 batched (K x C) x (C x P) GEMMs (the multiplies: 4/9 of the direct conv's FLOPs);
4. Y = Aᵀ·M over the rows, then over the columns: (16, K, P);
5. scatter: Y -> (N, K, OH, OW), cropped, with the bias/activation/residual epilogue fused into
   it by TVM.
Numpy references: `transform_weight`, `winograd_conv2d`.
"""

from __future__ import annotations

import numpy as np

NAME = "edgegen.cpu_winograd_conv2d"
PREFIX = "edgegen_cpu_winograd_conv2d"   # "conv" in the name: profiles count its kernels as convolution
TILE = 4                   # output tile side: F(4x4, 3x3)
ALPHA = TILE + 2           # input tile side
# below this many channels the two transform GEMMs and the copies (each pass over about 2.25x the
# activations) cost more than the multiplies they save
MIN_CHANNELS = 32
# U holds 36 values per channel pair where the weight holds 9: the artifact stores, and every call reads,
# 4x the weight. Above this many weight values (an SD UNet's 640- and 1280-channel convolutions, at 16x16
# and 8x8 where few output tiles share each U value) that costs more memory than the multiplies save;
# the 320-channel convolutions at 64x64, where most of the FLOPs are, stay under it
MAX_WEIGHT_VALUES = 1 << 20
BT = np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
               [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], np.float64)
G = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
              [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], np.float64)
AT = np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]], np.float64)


def transform_weight(w: np.ndarray) -> np.ndarray:
    """(K, C, 3, 3) -> U as (36, K, C): U[a·6+b] = (G·w·Gᵀ)[a, b]."""
    u = np.einsum("ai,kcij,bj->abkc", G, w.astype(np.float64), G)
    return np.ascontiguousarray(u.reshape(ALPHA * ALPHA, *w.shape[:2]).astype(w.dtype))


def tiles(h: int, w: int, padding: tuple[int, int]) -> tuple[int, int, int, int]:
    """(OH, OW, TH, TW): the output size and the number of 4x4 output tiles down and across."""
    oh, ow = h + 2 * padding[0] - 2, w + 2 * padding[1] - 2
    return oh, ow, -(-oh // TILE), -(-ow // TILE)


def winograd_conv2d(x: np.ndarray, u: np.ndarray, padding: tuple[int, int]) -> np.ndarray:
    """The five steps in numpy (the reference for the kernels): x (N, C, H, W), U from
    transform_weight, stride 1, zero padding (pad_h, pad_w)."""
    n, c, h, w = x.shape
    k = u.shape[1]
    ph, pw = padding
    oh, ow, th, tw = tiles(h, w, padding)
    xp = np.zeros((n, c, TILE * th + 2, TILE * tw + 2), np.float64)
    xp[:, :, ph:ph + h, pw:pw + w] = x
    d = np.stack([xp[:, :, i:i + TILE * th:TILE, j:j + TILE * tw:TILE] for i in range(ALPHA) for j in range(ALPHA)])
    d = d.transpose(0, 2, 1, 3, 4)   # (36, C, N, TH, TW): P runs over (n, ty, tx)
    d = d.reshape(ALPHA, ALPHA, c, -1)
    v = np.einsum("ai,bj,ijcp->abcp", BT, BT, d).reshape(ALPHA * ALPHA, c, -1)
    m = np.einsum("ekc,ecp->ekp", u.astype(np.float64), v).reshape(ALPHA, ALPHA, k, -1)
    y = np.einsum("ia,jb,abkp->ijkp", AT, AT, m).reshape(TILE, TILE, k, n, th, tw)
    y = y.transpose(3, 2, 4, 0, 5, 1).reshape(n, k, TILE * th, TILE * tw)
    return y[:, :, :oh, :ow].astype(x.dtype)


def gather(shape, padding):
    """x (N, C, H, W) -> D (36, C, N·TH·TW): the 6x6 input tile of each output tile, zeros outside."""
    from tvm import te, tirx

    from .winograd import _i64

    n, c, h, w = shape
    ph, pw = padding
    _, _, th, tw = tiles(h, w, padding)
    x = te.placeholder(_i64(*shape), "float32", name="x")

    def value(e, ch, p):
        bn, ty, tx = p // (th * tw), (p // tw) % th, p % tw
        row, col = ty * TILE + e // ALPHA - ph, tx * TILE + e % ALPHA - pw
        inside = tirx.all(row >= 0, row < h, col >= 0, col < w)
        return tirx.if_then_else(inside, x[bn, ch, tirx.max(tirx.min(row, h - 1), 0),
                                           tirx.max(tirx.min(col, w - 1), 0)], tirx.const(0.0, "float32"))

    d = te.compute(_i64(ALPHA * ALPHA, c, n * th * tw), value, name="winograd_gather")
    return te.create_prim_func([x, d]).without_attr("global_symbol")


def scatter(k: int, n: int, oh: int, ow: int):
    """Y (16, K, N·TH·TW) -> (N, K, OH, OW): each 4x4 output tile into place, cropped."""
    from tvm import te

    from .winograd import _i64

    th, tw = -(-oh // TILE), -(-ow // TILE)
    y = te.placeholder(_i64(TILE * TILE, k, n * th * tw), "float32", name="y")

    def value(bn, ch, row, col):
        return y[(row % TILE) * TILE + col % TILE, ch, bn * th * tw + (row // TILE) * tw + col // TILE]

    out = te.compute(_i64(n, k, oh, ow), value, name="winograd_scatter")
    return te.create_prim_func([y, out]).without_attr("global_symbol")


def _gemm_shape(a_shape, b_shape) -> list:
    """The product's shape: the batch (of whichever operand has one), rows of A, columns of B."""
    batched = [s[0] for s in (a_shape, b_shape) if len(s) == 3][:1]
    return batched + [a_shape[-2], b_shape[-1]]


def gemm(a_shape, b_shape):
    """A (M, K) or (B, M, K) times B (K, N) or (B, K, N), as its own kernel, so that the kernel table
    and profiles name it as part of the convolution (a plain matmul would count as a linear layer)."""
    from tvm import te

    from .winograd import _i64

    a = te.placeholder(_i64(*a_shape), "float32", name="a")
    b = te.placeholder(_i64(*b_shape), "float32", name="b")
    k = te.reduce_axis((0, a_shape[-1]), name="k")
    out_shape = _gemm_shape(a_shape, b_shape)

    def value(*idx):
        *bi, i, j = idx
        left = a[(*bi, i, k)] if len(a_shape) == 3 else a[i, k]
        right = b[(*bi, k, j)] if len(b_shape) == 3 else b[k, j]
        return te.sum(left * right, axis=k)

    out = te.compute(_i64(*out_shape), value, name="winograd_gemm")
    return te.create_prim_func([a, b, out]).without_attr("global_symbol")


def choose(weight_shape, data_shape, attrs) -> tuple[bool, str]:
    """Whether a conv2d takes F(4x4, 3x3) on the CPU, and why (or why not)."""
    from .winograd import choose as eligible

    ok, reason = eligible(weight_shape, attrs)
    if not ok:
        return ok, reason
    k, c = weight_shape[:2]
    if min(k, c) < MIN_CHANNELS:
        return False, (f"{c}->{k} channels: under {MIN_CHANNELS}, the transform GEMMs and copies cost more than "
                       f"the multiplies they save")
    values = int(np.prod(weight_shape))
    if values > MAX_WEIGHT_VALUES:
        return False, (f"{c}->{k} channels: {values} weight values, over {MAX_WEIGHT_VALUES}; U would store and read "
                       f"4x that ({4 * values * 4 / 2 ** 20:.1f} MiB) per call")
    oh, ow, _, _ = tiles(data_shape[2], data_shape[3], [int(p) for p in attrs.padding][:2])
    if min(oh, ow) < TILE:
        return False, f"a {oh}x{ow} output: smaller than one 4x4 tile"
    return True, f"{c}->{k} channels at {oh}x{ow}: F(4x4,3x3), 36 multiplies per 4x4 output tile instead of 144"


def rewrite(module, weights: dict, weight_specs: list, decisions: list, keep: set = frozenset()):
    """Rewrite eligible conv2d calls on float32 weight parameters of `main` into the five steps, the
    weight replaced by U (computed here, once). Returns the new module; `weights` and
    `weight_specs` are updated in place; `decisions` receives one entry per 3x3 convolution.
    `keep`: weights left as they are (direct convolution)."""
    from tvm import relax
    from tvm.relax.dpl import is_op, rewrite_call, wildcard

    from .relax_util import WeightRewrite

    rw = WeightRewrite(module, weights, weight_specs)
    decided: set[int] = set()
    x, wt = wildcard(), wildcard()
    conv = is_op("relax.nn.conv2d")(x, wt)

    def fn(expr, matches):
        weight = matches[wt]
        index = rw.index_of(weight)
        if index is None or index in decided or str(weight.ty.dtype) != "float32":
            return expr
        shape = [int(d) for d in weight.ty.shape.values]
        data = [int(d) for d in matches[x].ty.shape.values]
        if len(shape) != 4 or shape[2:] != [3, 3]:
            return expr
        decided.add(index)
        ok, reason = choose(shape, data, expr.attrs)
        if ok and rw.uses.get(index, 0) != 1:
            ok, reason = False, "the weight is shared with other operators"
        if ok and weight_specs[index].name in keep:
            from .weight_layout import KEPT

            ok, reason = False, KEPT
        decisions.append({"weight": weight_specs[index].name, "input": data, "out_channels": shape[0],
                          "kernel": "winograd F(4x4,3x3)" if ok else "direct", "reason": reason})
        if not ok:
            return expr
        pad = [int(p) for p in expr.attrs.padding][:2]
        n, c, h, w = data
        k = shape[0]
        oh, ow, th, tw = tiles(h, w, pad)
        p = n * th * tw
        [u] = rw.replace(index, [("winograd4", transform_weight(weights[weight_specs[index].name]))])
        fgather = rw.builder.add_func(gather(data, pad), f"{PREFIX}_gather")
        fscatter = rw.builder.add_func(scatter(k, n, oh, ow), f"{PREFIX}_scatter")
        d = relax.call_tir(fgather, [matches[x]], relax.TensorType((ALPHA * ALPHA, c, p), "float32"))
        b6, a6 = relax.const(BT.astype(np.float32)), relax.const(AT.astype(np.float32))

        def mm(left, right, lshape, rshape):
            fn = rw.builder.add_func(gemm(lshape, rshape), f"{PREFIX}_gemm")
            return relax.call_tir(fn, [left, right], relax.TensorType(_gemm_shape(lshape, rshape), "float32"))

        sq = ALPHA * ALPHA
        t = mm(b6, relax.op.reshape(d, (ALPHA, ALPHA * c * p)), (ALPHA, ALPHA), (ALPHA, ALPHA * c * p))
        v = mm(b6, relax.op.reshape(t, (ALPHA, ALPHA, c * p)), (ALPHA, ALPHA), (ALPHA, ALPHA, c * p))  # per row
        m = mm(u, relax.op.reshape(v, (sq, c, p)), (sq, k, c), (sq, c, p))
        z = mm(a6, relax.op.reshape(m, (ALPHA, ALPHA * k * p)), (TILE, ALPHA), (ALPHA, ALPHA * k * p))
        y = relax.op.reshape(mm(a6, relax.op.reshape(z, (TILE, ALPHA, k * p)), (TILE, ALPHA), (TILE, ALPHA, k * p)),
                             (TILE * TILE, k, p))
        return relax.call_tir(fscatter, [y], relax.TensorType((n, k, oh, ow), "float32"))

    return rw.finish(rewrite_call(conv, fn, rw.main))
