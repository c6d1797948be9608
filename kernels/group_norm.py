"""Kernel `edgegen.group_norm_silu`: GroupNorm, with the SiLU that follows it in UNet resnet
blocks fused in, as one GPU kernel with one workgroup per (batch, group).

The workgroup reads its group once for both statistics (sum and sum of squares, reduced
across the workgroup's threads) and once more to write the normalized, scaled, shifted and
activated output. TVM's default GPU lowering gives the whole tensor's groups to one
workgroup per batch row, which on a 1x320x64x64 activation leaves the GPU one workgroup.
Numpy reference: `group_norm_silu`.
"""

from __future__ import annotations

import numpy as np

KERNEL_ATTR = "edgegen.kernel"
NAME = "edgegen.group_norm_silu"
PREFIX = "edgegen_group_norm"
MAX_THREADS = 256


def group_norm_silu(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, groups: int, eps: float,
                    silu: bool = True) -> np.ndarray:
    n, c = x.shape[:2]
    g = x.reshape(n, groups, -1).astype(np.float64)
    mean = g.mean(-1, keepdims=True)
    var = g.var(-1, keepdims=True)
    y = ((g - mean) / np.sqrt(var + eps)).reshape(x.shape)
    shape = (1, c) + (1,) * (x.ndim - 2)
    y = y * gamma.reshape(shape) + beta.reshape(shape)
    if silu:
        y = y / (1 + np.exp(-y))
    return y.astype(x.dtype)


def prim_func(shape, groups: int, eps: float, silu: bool, dtype: str = "float32"):
    """The TE definition: two reductions over each group, then the elementwise output."""
    import tvm
    from tvm import te, tirx

    n, c, h, w = (int(d) for d in shape)
    cg = c // groups
    size = cg * h * w
    i64 = [tvm.tirx.IntImm("int64", d) for d in (n, c, h, w)]
    x = te.placeholder(i64, dtype, name="x")
    gamma = te.placeholder((i64[1],), dtype, name="gamma")
    beta = te.placeholder((i64[1],), dtype, name="beta")

    def elem(b, g, r):
        return x[b, g * cg + r // (h * w), (r // w) % h, r % w].astype("float32")

    r1 = te.reduce_axis((0, size), name="r")
    total = te.compute((n, groups), lambda b, g: te.sum(elem(b, g, r1), axis=r1), name="gn_sum")
    r2 = te.reduce_axis((0, size), name="r")
    squares = te.compute((n, groups), lambda b, g: te.sum(elem(b, g, r2) * elem(b, g, r2), axis=r2),
                         name="gn_sqsum")

    def out(b, ch, i, j):
        g = ch // cg
        mean = total[b, g] / float(size)
        var = tirx.max(squares[b, g] / float(size) - mean * mean, 0.0)
        y = (x[b, ch, i, j].astype("float32") - mean) * tirx.rsqrt(var + eps) * gamma[ch].astype("float32") \
            + beta[ch].astype("float32")
        if silu:
            y = y * tirx.sigmoid(y)
        return y.astype(dtype)

    y = te.compute(i64, out, name="gn_out")
    func = te.create_prim_func([x, gamma, beta, y])
    return func.without_attr("global_symbol").with_attr(KERNEL_ATTR, NAME).with_attr("op_pattern", 8) \
        .with_attr("edgegen.groups", groups)


def schedule(func, max_threads: int):
    """One workgroup per (batch, group); its threads stride over the group."""
    from tvm import s_tir

    groups = int(func.attrs["edgegen.groups"])
    sch = s_tir.Schedule(func)
    out = sch.get_sblock("gn_out")
    b, c, h, w = sch.get_loops(out)
    _, c_, h_, w_ = (int(d) for d in func.params[0].ty.shape)
    cg = c_ // groups
    size = cg * h_ * w_
    threads = min(max_threads, MAX_THREADS, 1 << max(size - 1, 1).bit_length())
    g, ci = sch.split(c, [groups, cg])
    r = sch.fuse(ci, h, w)
    bx = sch.fuse(b, g)
    _, tx = sch.split(r, [None, threads])
    sch.bind(bx, "blockIdx.x")
    sch.bind(tx, "threadIdx.x")
    for name in ("gn_sqsum", "gn_sum"):
        block = sch.get_sblock(name)
        sch.compute_at(block, bx)
        red = sch.get_loops(block)[-1]
        _, rtx = sch.split(red, [None, threads])
        sch.bind(rtx, "threadIdx.x")
        sch.set_scope(block, 0, "shared")
    return sch


def make_rule():
    """A dlight rule: schedules edgegen.group_norm_silu functions, None for anything else."""
    from tvm import tirx
    from tvm.s_tir.dlight import ScheduleRule

    class GroupNormRule(ScheduleRule):
        name = NAME

        def apply(self, func, target, tunable):
            if not isinstance(func, tirx.PrimFunc) or func.attrs is None or func.attrs.get(KERNEL_ATTR) != NAME:
                return None
            return schedule(func, int(target.attrs.get("max_num_threads", MAX_THREADS)))

    return GroupNormRule()


def make_fusion_pass():
    """Rewrite nn.group_norm (NCHW, grouped over channels), optionally followed by nn.silu,
    into a call of this kernel."""
    import tvm
    from tvm import relax
    from tvm.relax.dpl import is_op, rewrite_call, wildcard

    @tvm.transform.module_pass(opt_level=0, name="EdgegenGroupNormSilu")
    def _pass(mod, _ctx):
        builder = relax.BlockBuilder(mod)
        added: list = []
        x, g, b = wildcard(), wildcard(), wildcard()
        norm = is_op("relax.nn.group_norm")(x, g, b)
        with_silu = is_op("relax.nn.silu")(norm)

        def rewrite(silu):
            def fn(expr, matches):
                call = matches[norm]
                attrs = call.attrs
                data = matches[x]
                shape = [int(d) for d in data.ty.shape.values] if data.ty.shape is not None else None
                if (shape is None or len(shape) != 4 or int(attrs.channel_axis) != 1
                        or [int(a) for a in attrs.axes] != [2, 3] or not attrs.center or not attrs.scale):
                    return expr
                func = prim_func(shape, int(attrs.num_groups), float(attrs.epsilon), silu, str(data.ty.dtype))
                gv = builder.add_func(func, f"{PREFIX}{'_silu' if silu else ''}_{len(added)}")
                added.append(gv)
                return relax.call_tir(gv, [data, matches[g], matches[b]], relax.TensorType(shape, str(data.ty.dtype)))
            return fn

        for gv, func in list(mod.functions_items()):
            if isinstance(func, relax.Function):
                func = rewrite_call(with_silu, rewrite(True), func)
                func = rewrite_call(norm, rewrite(False), func)
                builder.update_func(gv, func)
        return builder.get()

    return _pass
