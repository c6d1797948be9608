"""Pass `FoldAttentionScale`: torch exports scaled_dot_product_attention as q·scale and kᵀ·scale
(each the square root of 1/sqrt(d)) before the q·kᵀ GEMM: two elementwise passes over q and k,
each a kernel call that reads and writes the whole tensor. The product's scale is moved onto the
GEMM's result, softmax(matmul(q, kᵀ) · scale_q·scale_k), where it runs on each register tile of
the GEMM as its epilogue (kernels/cpu_loops.py) or inside the flash kernel (kernels/cpu_attention.py).
Only GEMMs whose result feeds a softmax, through reshapes or not, and scalar constant scales.
Numpy reference: `scaled_scores`."""

from __future__ import annotations

import numpy as np


def scaled_scores(q: np.ndarray, kt: np.ndarray, scale_q: float, scale_k: float) -> np.ndarray:
    """What the rewritten graph computes before the softmax: (q·kᵀ)·(scale_q·scale_k)."""
    return (q.astype(np.float64) @ kt.astype(np.float64)) * (scale_q * scale_k)


def _scalar(const) -> float | None:
    value = np.asarray(const.value.numpy())
    return float(value.reshape(())) if value.size == 1 and value.dtype == np.float32 else None


def make_pass():
    import tvm
    from tvm import relax
    from tvm.relax.dpl import is_const, is_op, rewrite_call, wildcard

    a, b, ca, cb = wildcard(), wildcard(), is_const(), is_const()
    qs, ks = is_op("relax.multiply")(a, ca), is_op("relax.multiply")(b, cb)
    q_shape, k_shape = wildcard(), wildcard()
    qr = is_op("relax.reshape")(qs, q_shape) | qs
    kr = is_op("relax.reshape")(ks, k_shape) | ks
    product = is_op("relax.matmul")(qr, kr)
    shaped = is_op("relax.reshape")(product, wildcard()) | product
    root = is_op("relax.nn.softmax")(shaped)

    def fold(expr, matches):
        sa, sb = _scalar(matches[ca]), _scalar(matches[cb])
        if sa is None or sb is None or str(matches[product].ty.dtype) != "float32":
            return expr
        q = matches[a] if q_shape not in matches else relax.op.reshape(matches[a], matches[q_shape])
        k = matches[b] if k_shape not in matches else relax.op.reshape(matches[b], matches[k_shape])
        scores = relax.op.multiply(relax.op.matmul(q, k, out_dtype="float32"),
                                   relax.const(np.float32(sa * sb), "float32"))
        if not matches[shaped].same_as(matches[product]):
            scores = relax.op.reshape(scores, matches[shaped].args[1])
        return relax.op.nn.softmax(scores, axis=expr.attrs.axis)

    @tvm.transform.module_pass(opt_level=0, name="FoldAttentionScale")
    def _pass(mod, _ctx):
        for gv, func in list(mod.functions_items()):
            if isinstance(func, relax.Function):
                mod.update_func(gv, rewrite_call(root, fold, func))
        return mod

    return _pass
