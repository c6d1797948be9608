"""Rule `cpu-parallel-vectorize`: a generic loop schedule for every PrimFunc on a CPU.

TVM's default lowering emits each operator as plain, single-threaded loop nests,
one per block. This rule, tried after the specialised rules, does three things:
1. inlines each elementwise block whose consumers are all elementwise, so chains
   like softmax's exp -> divide -> where -> broadcast make one pass over memory;
2. elementwise blocks: all loops fused, split by a vector width, the outer part
   parallel over threads, the inner part vectorized;
3. reduction blocks (conv, matmul, norm statistics) with loops S..S R..R: when
   the last spatial iterator indexes the innermost dimension of every input it
   touches (conv's output width, matmul's N), a register tile of 4 x 16 outputs
   (the last two spatial loops) is moved under the reduction loops and
   unrolled, so LLVM's SLP pass turns it into vector FMAs (with a target `mcpu`
   that has them), and the initialisation is hoisted out; otherwise (row
   reductions such as softmax's max/sum) the spatial loops are made parallel.
A block it cannot read this way stays as it was.
"""

from __future__ import annotations

VECTOR_LANES = (16, 8, 4)
ROW_TILE = 4
MIN_PARALLEL = 64


def _extent(sch, loop) -> int | None:
    ext = sch.get(loop).extent
    return int(ext) if hasattr(ext, "value") else None


def _lanes(extent: int | None) -> int | None:
    if extent is None:
        return None
    return next((v for v in VECTOR_LANES if extent % v == 0), None)


def _uses(expr, var) -> bool:
    from tvm.tirx.analysis import undefined_vars

    return any(v.same_as(var) for v in undefined_vars(expr))


def _contiguous_in_reads(sch, block, var) -> bool:
    """True when every read region that depends on `var` depends on it in its last dimension only."""
    for region in sch.get(block).reads:
        dims = [d for d, r in enumerate(region.region) if _uses(r.min, var)]
        if dims and dims != [len(region.region) - 1]:
            return False
    return True


def _schedule_spatial(sch, loops) -> bool:
    extents = [_extent(sch, loop) for loop in loops]
    if None in extents or _prod(extents) < MIN_PARALLEL:
        return False
    *outer, last = loops
    lanes = _lanes(extents[-1])
    if lanes:
        # vectorize within the innermost dimension, so lanes need no index division
        last_outer, inner = sch.split(last, [None, lanes])
        sch.parallel(sch.fuse(*outer, last_outer))
        sch.vectorize(inner)
    else:
        sch.parallel(sch.fuse(*loops) if len(loops) > 1 else loops[0])
    return True


def _prod(values) -> int:
    out = 1
    for v in values:
        out *= v
    return out


def _schedule_reduction(sch, info, spatial, reduce) -> bool:
    block = info.block_rv
    last_var = sch.get(block).iter_vars[len(spatial) - 1].var
    lanes = _lanes(_extent(sch, spatial[-1]))
    if lanes is None or not _contiguous_in_reads(sch, block, last_var):
        par = sch.fuse(*spatial) if len(spatial) > 1 else spatial[0]
        sch.parallel(par)
        return True
    # register tile: ROW_TILE x lanes outputs accumulate while the reduction loops run
    *outer, last = spatial
    tiles = []
    if outer and _extent(sch, outer[-1]) and _extent(sch, outer[-1]) % ROW_TILE == 0:
        row_outer, row = sch.split(outer[-1], [None, ROW_TILE])
        outer = [*outer[:-1], row_outer]
        tiles.append(row)
    col_outer, col = sch.split(last, [None, lanes])
    tiles.append(col)
    sch.reorder(*outer, col_outer, *reduce, *tiles)
    par = sch.fuse(*outer, col_outer) if outer else col_outer
    sch.parallel(par)
    sch.decompose_reduction(block, reduce[0])
    for tile in tiles:  # `vectorize` refuses loops under a reduction; LLVM's SLP pass vectorizes the lanes
        sch.unroll(tile)
    return True


def _schedule_block(sch, info) -> bool:
    kinds = info.dom_kind()
    spatial = [it.loop_rv for it in info.iters if it.kind == "S"]
    reduce = [it.loop_rv for it in info.iters if it.kind == "R"]
    if not spatial or kinds != "S" * len(spatial) + "R" * len(reduce):
        return False  # only the S..S R..R shape
    if not reduce:
        return _schedule_spatial(sch, spatial)
    return _schedule_reduction(sch, info, spatial, reduce)


def _inline_elementwise(sch, infos) -> None:
    outputs = {sch.get(b).name_hint for b in sch.get_output_blocks(sch.get_sblock("root"))}
    by_name = {i.name: i for i in infos}
    for info in infos:
        if not info.is_injective() or info.name in outputs:
            continue
        consumers = [sch.get(c).name_hint for c in sch.get_consumers(info.block_rv)]
        if consumers and all(c in by_name and by_name[c].is_injective() for c in consumers):
            try:
                sch.compute_inline(info.block_rv)
            except Exception:  # noqa: BLE001 - not inlinable (e.g. reads that do not line up)
                continue


def make_rule():
    from tvm import s_tir
    from tvm.s_tir.dlight import ScheduleRule, normalize_prim_func

    class ParallelVectorize(ScheduleRule):
        name = "cpu-parallel-vectorize"

        def apply(self, func, target, tunable):
            sch = s_tir.Schedule(func)
            infos = normalize_prim_func(sch)
            if not infos:
                return None
            _inline_elementwise(sch, infos)
            infos = normalize_prim_func(sch)
            if not infos:
                return None
            changed = False
            for info in infos:
                trial = sch.copy()
                try:
                    if _schedule_block(trial, info):
                        sch = trial
                        changed = True
                except Exception:  # noqa: BLE001 - a primitive refused: keep this block unscheduled
                    continue
            return sch if changed else None

    return ParallelVectorize()
