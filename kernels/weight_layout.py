"""Weight layouts made at build time, for the CPU target and the GPU plans.

torch's linear exports as `matmul(x, permute_dims(w))`: kept as it is, every call first runs a
transpose kernel over the whole weight (a 1280x320 weight: 3.3 MB read and written per call)
before the GEMM reads it; in a GPU plan the transposed copy also takes arena space. The GEMM schedule
of kernels/cpu_loops.py wants the weight as (K, N), its columns contiguous under the vector lanes,
and the GPU GEMMs read it either way; this rewrite stores it that way in the artifact (weight
`<name>.t`), so the call reads it as it is. A weight that other operators also read is
left alone, with the reason. Numpy reference: `transpose_weight`.
"""

from __future__ import annotations

import numpy as np

KEPT = "kept as the quantization report names it (a float32 layer)"


def transpose_weight(w: np.ndarray) -> np.ndarray:
    """(N, K) -> (K, N), contiguous: what `matmul(x, permute_dims(w))` reads."""
    return np.ascontiguousarray(w.T)


def rewrite(module, weights: dict, weight_specs: list, decisions: list, keep: set = frozenset(),
            kept_reason: str = KEPT):
    """Rewrite `matmul(x, permute_dims(w))` on 2-D weight parameters of `main` into `matmul(x, wᵀ)`
    with wᵀ stored. Returns the new module; `weights` and `weight_specs` are updated in place;
    `decisions` receives one entry per such linear layer. `keep`: weights left as they are, for
    `kept_reason`."""
    from tvm import relax
    from tvm.relax.dpl import is_op, rewrite_call, wildcard

    from .relax_util import WeightRewrite

    rw = WeightRewrite(module, weights, weight_specs)
    decided: set[int] = set()
    x, wt = wildcard(), wildcard()
    transposed = is_op("relax.permute_dims")(wt)
    linear = is_op("relax.matmul")(x, transposed)

    def fn(expr, matches):
        weight = matches[wt]
        index = rw.index_of(weight)
        if index is None or index in decided or str(weight.ty.dtype) != "float32":
            return expr
        axes = matches[transposed].attrs.axes
        if len(weight.ty.shape.values) != 2 or (axes is not None and [int(a) for a in axes] != [1, 0]):
            return expr
        decided.add(index)
        name = weight_specs[index].name
        if rw.uses.get(index, 0) != 1 or name in keep:
            why = kept_reason if name in keep else "the weight is shared with other operators"
            decisions.append({"weight": name, "layout": "as stored", "reason": f"{why}: transposed per call"})
            return expr
        decisions.append({"weight": name, "layout": "transposed (K, N)",
                          "reason": "stored as the GEMM reads it: no transpose kernel per call"})
        [t] = rw.replace(index, [("t", transpose_weight(weights[name]))])
        return relax.op.matmul(matches[x], t, out_dtype=expr.attrs.out_dtype)

    return rw.finish(rewrite_call(linear, fn, rw.main))
