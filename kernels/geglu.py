"""Kernel `edgegen.geglu`: the GEGLU feed-forward (diffusers' `hidden * gelu(gate)` after one
projection to twice the width) as a GEMM whose epilogue holds the gate.

torch exports GEGLU as one linear to 2N columns, a split, GELU on one half and a product. The
2N-wide projection goes through memory and is read back twice. Here the projection's weight
and bias are split at build time into value and gate halves, so the graph holds two GEMMs;
TVM fuses bias + GELU + the product with the value half into the gate GEMM's epilogue
(dlight schedules the epilogue inside the GEMM kernel), and no 2N-wide tensor is written.
Numpy reference: `geglu`.
"""

from __future__ import annotations

import numpy as np

NAME = "edgegen.geglu"


def geglu(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """x · wᵀ + b split in value and gate halves; value · gelu(gate) (erf form)."""
    from math import erf

    y = x.astype(np.float64) @ w.T.astype(np.float64) + b
    value, gate = np.split(y, 2, axis=-1)
    return (value * 0.5 * gate * (1 + np.vectorize(erf)(gate / np.sqrt(2)))).astype(x.dtype)


def rewrite(lowered_module, weights: dict, weight_specs: list, decisions: list):
    """Split every GEGLU projection (weight and bias parameters of `main`, used nowhere else) into
    value and gate halves. Returns the new module; `weights`/`weight_specs` are updated in place;
    `decisions` receives one entry per GEGLU found."""
    from tvm import relax
    from tvm.relax.dpl import is_op, rewrite_call, wildcard

    from .relax_util import WeightRewrite

    rw = WeightRewrite(lowered_module, weights, weight_specs)
    bound = relax.analysis.get_var2val(rw.main)

    def value_of(expr):
        while isinstance(expr, relax.Var) and expr in bound:
            expr = bound[expr]
        return expr

    def op_name(expr):
        return getattr(getattr(expr, "op", None), "name", None)

    h, g = wildcard(), wildcard()
    product = is_op("relax.multiply")(h, is_op("relax.nn.gelu")(g))
    seen: list = []

    def fn(expr, matches):
        if any(s.same_as(expr) for s in seen):
            return expr
        seen.append(expr)
        value, gate = value_of(matches[h]), value_of(matches[g])
        if not (isinstance(value, relax.TupleGetItem) and isinstance(gate, relax.TupleGetItem)
                and value.index == 0 and gate.index == 1 and value.tuple_value.same_as(gate.tuple_value)):
            return expr
        split = value_of(value.tuple_value)
        if op_name(split) != "relax.split" or int(split.attrs.axis) not in (-1, len(split.args[0].ty.shape.values) - 1):
            return expr
        projected = value_of(split.args[0])
        out_shape = None
        if op_name(projected) == "relax.reshape":
            out_shape = [int(d) for d in projected.ty.shape.values]
            projected = value_of(projected.args[0])
        if op_name(projected) != "relax.add":
            return expr
        a, c = (value_of(arg) for arg in projected.args)
        bias, matmul = (projected.args[0], c) if op_name(c) == "relax.matmul" else (projected.args[1], a)
        if op_name(matmul) != "relax.matmul":
            return expr
        transposed = value_of(matmul.args[1])
        if op_name(transposed) != "relax.permute_dims" or [int(x) for x in transposed.attrs.axes] != [1, 0]:
            return expr
        wi, bi = rw.index_of(transposed.args[0]), rw.index_of(bias)
        if wi is None or bi is None or rw.uses.get(wi) != 1 or rw.uses.get(bi) != 1 or wi in rw.replaced:
            return expr
        w, b = weights[weight_specs[wi].name], weights[weight_specs[bi].name]
        n = w.shape[0] // 2
        if b.shape != (2 * n,) or w.shape[0] != 2 * n:
            return expr
        wv, wg = rw.replace(wi, [("value", np.ascontiguousarray(w[:n])), ("gate", np.ascontiguousarray(w[n:]))])
        bv, bg = rw.replace(bi, [("value", np.ascontiguousarray(b[:n])), ("gate", np.ascontiguousarray(b[n:]))])
        x = matmul.args[0]

        def half(weight, bias_half):
            return relax.op.add(relax.op.matmul(x, relax.op.permute_dims(weight, [1, 0])), bias_half)

        # the product stays in the GEMM's layout, reshaped (a view) after: an epilogue fuses only
        # elementwise operators
        out = relax.op.multiply(half(wv, bv), relax.op.nn.gelu(half(wg, bg)))
        decisions.append({"weight": weight_specs[wi].name, "width": n, "kernel": "geglu",
                          "reason": "projection split at build time: bias, GELU and the product fuse into the "
                                    "gate GEMM's epilogue"})
        return relax.op.reshape(out, out_shape[:-1] + [n]) if out_shape else out

    return rw.finish(rewrite_call(product, fn, rw.main))
