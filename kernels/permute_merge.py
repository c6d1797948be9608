"""Pass `MergePermutes`: permute_dims(permute_dims(x, p1), p2) is one permute_dims(x, p) with
p[i] = p1[p2[i]], and x itself when p is the identity. torch's scaled_dot_product_attention
exports its output as (B·H, S, D) -> (B, H, S, D) -> permute [2, 0, 1, 3] -> permute [1, 2, 0, 3]:
two transposes that cancel, fused by TVM into one copy of the whole output per attention call.
Numpy reference: `merged_axes`."""

from __future__ import annotations


def merged_axes(p1: list[int], p2: list[int]) -> list[int]:
    """The axes of permute(permute(x, p1), p2) as one permutation of x."""
    return [p1[i] for i in p2]


def make_pass():
    import tvm
    from tvm import relax
    from tvm.relax.dpl import is_op, rewrite_call, wildcard

    x = wildcard()
    inner = is_op("relax.permute_dims")(x)
    outer = is_op("relax.permute_dims")(inner)

    def axes(call, ndim: int) -> list[int]:
        given = call.attrs.axes
        return list(reversed(range(ndim))) if given is None else [int(a) % ndim for a in given]

    def merge(expr, matches):
        shape = getattr(matches[x].ty, "shape", None)
        if shape is None or getattr(shape, "values", None) is None:
            return expr
        ndim = len(shape.values)
        p = merged_axes(axes(matches[inner], ndim), axes(expr, ndim))
        return matches[x] if p == list(range(ndim)) else relax.op.permute_dims(matches[x], p)

    @tvm.transform.module_pass(opt_level=0, name="MergePermutes")
    def _pass(mod, _ctx):
        for gv, func in list(mod.functions_items()):
            if isinstance(func, relax.Function):
                mod.update_func(gv, rewrite_call(outer, merge, func))
        return mod

    return _pass
