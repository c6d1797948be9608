"""Kernel `edgegen.winograd_conv2d`: Winograd F(2x2, 3x3) for 3x3, stride-1 convolutions.

Each 2x2 output tile comes from a 4x4 input tile with 16 multiplies per input/output channel
pair instead of 36. The weights are transformed once, at build time (U = G·g·Gᵀ, stored as
the artifact's weight in a (16, K, C) layout); the graph computes the input transform
(V = Bᵀ·d·B per tile), 16 batched GEMMs (M = U·V, which dlight tiles like any GEMM) and the
output transform (Y = Aᵀ·M·A), into which TVM fuses the bias/residual epilogue.
Convolutions with few channels keep the direct kernel, with the reason recorded.
Numpy references: `winograd_conv2d`, `transform_weight`.
"""

from __future__ import annotations

import numpy as np

NAME = "edgegen.winograd_conv2d"
PREFIX = "edgegen_winograd"
MIN_CHANNELS = 8       # below this the transforms cost more than the multiplies they save
# Winograd's scratch (V and M, each 4x the activations) costs arena memory: by the roofline it must take
# at most this share of the direct convolution's time
MAX_TIME_RATIO = 0.8
BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float64)
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float64)
AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float64)


def transform_weight(w: np.ndarray) -> np.ndarray:
    """(K, C, 3, 3) -> U as (16, K, C): U[a*4+b] = (G·w·Gᵀ)[a, b]."""
    u = np.einsum("ai,kcij,bj->abkc", G, w.astype(np.float64), G)
    return u.reshape(16, *w.shape[:2]).astype(w.dtype)


def winograd_conv2d(x: np.ndarray, u: np.ndarray, padding: tuple[int, int]) -> np.ndarray:
    """The whole algorithm in numpy (the reference for the three kernels): x (N, C, H, W), U from
    transform_weight, stride 1, zero padding (pad_h, pad_w)."""
    n, c, h, w = x.shape
    k = u.shape[1]
    ph, pw = padding
    oh, ow = h + 2 * ph - 2, w + 2 * pw - 2
    th, tw = (oh + 1) // 2, (ow + 1) // 2
    xp = np.zeros((n, c, 2 * th + 2, 2 * tw + 2), np.float64)
    xp[:, :, ph:ph + h, pw:pw + w] = x
    d = np.stack([np.stack([xp[:, :, i:i + 2 * th:2, j:j + 2 * tw:2] for j in range(4)], -1) for i in range(4)], -2)
    v = np.einsum("ai,ncpqij,bj->abcnpq", BT, d, BT).reshape(16, c, -1)
    m = np.einsum("ekc,ecp->ekp", u.astype(np.float64), v).reshape(4, 4, k, n, th, tw)
    y = np.einsum("ia,abknpq,jb->knpiqj", AT, m, AT).reshape(k, n, 2 * th, 2 * tw)
    return y[:, :, :oh, :ow].transpose(1, 0, 2, 3).astype(x.dtype)


def _coef(matrix: np.ndarray, row, col: int):
    """matrix[row, col] for a loop variable `row`, as a select over the constant entries."""
    from tvm import tirx

    expr = tirx.const(0.0, "float32")
    for r in range(matrix.shape[0]):
        if matrix[r, col] != 0:
            expr = tirx.Select(row == r, tirx.const(float(matrix[r, col]), "float32"), expr)
    return expr


def _i64(*dims):
    """Shapes as int64, as Relax's legalized operators index (FuseTIR needs them to agree)."""
    from tvm import tirx

    return [tirx.IntImm("int64", int(d)) for d in dims]


def input_transform(shape, padding):
    """x (N, C, H, W) -> V (16, C, N·TH·TW): each 4x4 tile d, Bᵀ·d·B, as 16 multiply-adds of
    constants (no reduction loop: the kernel is elementwise)."""
    from tvm import te, tirx

    n, c, h, w = shape
    ph, pw = padding
    th, tw = (h + 2 * ph - 1) // 2, (w + 2 * pw - 1) // 2
    x = te.placeholder(_i64(*shape), "float32", name="x")

    def value(e, ch, p):
        a, b = e // 4, e % 4
        bn, rest = p // (th * tw), p % (th * tw)
        ty, tx = rest // tw, rest % tw
        total = tirx.const(0.0, "float32")
        for i in range(4):
            for j in range(4):
                row, col = ty * 2 + i - ph, tx * 2 + j - pw
                inside = tirx.all(row >= 0, row < h, col >= 0, col < w)
                pixel = tirx.if_then_else(inside, x[bn, ch, tirx.max(tirx.min(row, h - 1), 0),
                                                    tirx.max(tirx.min(col, w - 1), 0)], tirx.const(0.0, "float32"))
                total = total + _coef(BT, a, i) * _coef(BT, b, j) * pixel
        return total

    v = te.compute(_i64(16, c, n * th * tw), value, name="winograd_input")
    return te.create_prim_func([x, v]).without_attr("global_symbol")


def output_transform(k: int, n: int, oh: int, ow: int):
    """M (16, K, N·TH·TW) -> Y (N, K, OH, OW): Aᵀ·M·A per tile, cropped to the output size."""
    from tvm import te, tirx

    th, tw = (oh + 1) // 2, (ow + 1) // 2
    m = te.placeholder(_i64(16, k, n * th * tw), "float32", name="m")

    def value(bn, ch, y, x):
        p = bn * th * tw + (y // 2) * tw + x // 2
        total = tirx.const(0.0, "float32")
        for a in range(4):
            for b in range(4):
                total = total + _coef(AT, y % 2, a) * _coef(AT, x % 2, b) * m[a * 4 + b, ch, p]
        return total

    out = te.compute(_i64(n, k, oh, ow), value, name="winograd_output")
    return te.create_prim_func([m, out]).without_attr("global_symbol")


def choose(weight_shape, attrs) -> tuple[bool, str]:
    """Whether a conv2d takes Winograd, and why (or why not)."""
    k, c, kh, kw = weight_shape
    if (kh, kw) != (3, 3) or [int(s) for s in attrs.strides] != [1, 1] or [int(d) for d in attrs.dilation] != [1, 1] \
            or int(attrs.groups) != 1 or str(attrs.data_layout) != "NCHW" or str(attrs.kernel_layout) != "OIHW":
        return False, "not a 3x3, stride-1, dense NCHW convolution"
    pad = [int(p) for p in attrs.padding]
    if len(pad) == 4 and (pad[0] != pad[2] or pad[1] != pad[3]):
        return False, "asymmetric padding"
    if min(k, c) < MIN_CHANNELS:
        return False, f"{c}->{k} channels: under {MIN_CHANNELS}, the transforms cost more than they save"
    return True, f"{c}->{k} channels: 16 multiplies per 2x2 output tile instead of 36"


def roofline(weight_shape, data_shape, padding, device: dict) -> tuple[bool, str]:
    """Winograd or direct by the device's roofline: each form's time is max(FLOPs / peak, bytes /
    bandwidth). Winograd does 16/36 of the multiplies but writes V and M, each 4x the activations, and
    reads them back: with few channels over many pixels (a VAE decoder at full resolution) that traffic
    outweighs the multiplies saved, and V and M take arena memory, hence MAX_TIME_RATIO. `device`:
    {"name", "flops" (peak FLOP/s), "bandwidth" (bytes/s), "bytes" (per stored element)}."""
    k, c = weight_shape[:2]
    n, _, h, w = data_shape
    oh, ow = h + 2 * padding[0] - 2, w + 2 * padding[1] - 2
    tiles = n * ((oh + 1) // 2) * ((ow + 1) // 2)
    pixels_in, pixels_out, b = n * h * w, n * oh * ow, device["bytes"]
    direct = (2 * 9 * c * k * pixels_out, (c * pixels_in + k * pixels_out + 9 * c * k) * b)
    # input transform (16 terms per V element), 16 GEMMs, output transform (16 terms per output)
    wino = (32 * 16 * c * tiles + 2 * 16 * c * k * tiles + 32 * k * pixels_out,
            (c * pixels_in + 2 * 16 * c * tiles + 16 * c * k + 2 * 16 * k * tiles + k * pixels_out) * b)

    def seconds(cost):
        return max(cost[0] / device["flops"], cost[1] / device["bandwidth"])

    t_direct, t_wino = seconds(direct), seconds(wino)
    return t_wino <= MAX_TIME_RATIO * t_direct, (f"roofline on {device['name']}: Winograd {t_wino * 1e3:.2f} ms vs "
                                                 f"direct {t_direct * 1e3:.2f} ms (Winograd needs ≤ "
                                                 f"{MAX_TIME_RATIO:.0%} for its scratch memory)")


def rewrite(lowered_module, weights: dict, weight_specs: list, decisions: list, packed: dict | None = None,
            device: dict | None = None):
    """Rewrite eligible conv2d calls on weight parameters of `main` into the Winograd form, with the
    weight replaced by U (computed here, once). Returns the new module; `weights` and
    `weight_specs` are updated in place; `decisions` receives one entry per 3x3 convolution.
    `packed` (weight -> scheme name): weights to be quantized, which keep the direct convolution.
    `device` (see roofline): eligible convolutions take Winograd only where the roofline says faster."""
    from tvm import relax
    from tvm.relax.dpl import is_op, rewrite_call, wildcard

    from .relax_util import WeightRewrite

    rw = WeightRewrite(lowered_module, weights, weight_specs)
    decided: set[int] = set()
    x, wt = wildcard(), wildcard()
    conv = is_op("relax.nn.conv2d")(x, wt)

    def fn(expr, matches):
        weight = matches[wt]
        index = rw.index_of(weight)
        if index is None or index in decided:    # rewrite_call revisits what it kept
            return expr
        shape = [int(d) for d in weight.ty.shape.values]
        data = [int(d) for d in matches[x].ty.shape.values]
        if len(shape) != 4 or shape[2:] != [3, 3]:
            return expr
        decided.add(index)
        ok, reason = choose(shape, expr.attrs)
        if ok and rw.uses.get(index, 0) != 1:
            ok, reason = False, "the weight is shared with other operators"
        scheme = (packed or {}).get(weight_specs[index].name)
        if ok and scheme is not None:
            ok, reason = False, (f"weight packed as {scheme}: the direct convolution decodes the 3x3 weight, where "
                                 f"Winograd's transformed weight would store 16/9 as many codes")
        if ok and device is not None:
            ok, why = roofline(shape, data, [int(p) for p in expr.attrs.padding][:2], device)
            reason = f"{reason}; {why}" if ok else f"{shape[1]}->{shape[0]} channels: {why}"
        decisions.append({"weight": weight_specs[index].name, "input": data, "out_channels": shape[0],
                          "kernel": "winograd" if ok else "direct", "reason": reason})
        if not ok:
            return expr
        pad = [int(p) for p in expr.attrs.padding][:2]
        n, _, h, w = data
        oh, ow = h + 2 * pad[0] - 2, w + 2 * pad[1] - 2
        [u] = rw.replace(index, [("winograd", transform_weight(weights[weight_specs[index].name]))])
        vin = rw.builder.add_func(input_transform(data, pad), f"{PREFIX}_input")
        vout = rw.builder.add_func(output_transform(shape[0], n, oh, ow), f"{PREFIX}_output")
        tiles = n * ((oh + 1) // 2) * ((ow + 1) // 2)
        v = relax.call_tir(vin, [matches[x]], relax.TensorType((16, shape[1], tiles), "float32"))
        return relax.call_tir(vout, [relax.op.matmul(u, v)], relax.TensorType((n, shape[0], oh, ow), "float32"))

    return rw.finish(rewrite_call(conv, fn, rw.main))
