"""Rule `cpu-parallel-vectorize`: a generic loop schedule for every PrimFunc on a CPU.

TVM's default lowering emits each operator as plain, single-threaded loop nests,
one per block. This rule, tried after the specialised rules, does these things:
1. inlines each elementwise block whose consumers are all elementwise, so chains
   like softmax's exp -> divide -> where -> broadcast make one pass over memory,
   and each plain copy (GroupNorm's reshape into groups) into whatever reads it;
   a function that is a chain of row reductions and elementwise steps over the
   same rows (softmax, layer norm) runs row by row, every step under its row;
2. elementwise blocks: all loops fused, split by a vector width, the outer part
   parallel over threads, the inner part vectorized;
3. reduction blocks (conv, matmul, norm statistics) with loops S..S R..R: when
   the last spatial iterator indexes the innermost dimension of every input it
   touches (conv's output width, matmul's N), a register tile of outputs is
   moved under the reduction loops and unrolled, so LLVM's SLP pass turns it
   into broadcast x vector FMAs (with a target `mcpu` that has them), and the
   initialisation is hoisted out:
   - a GEMM (one reduction loop): 4 rows x 16 columns; the columns run in blocks
     sized so that the weight's block (K x block) stays in L2 while the rows
     sweep past it;
   - a convolution (a spatial loop over output channels that indexes the weight
     but not the input): 4 output channels x 16 columns, so each input vector
     serves 4 weights; output rows outside the channels, so a band of input rows
     stays in cache while every channel passes over it;
   - other reductions with such a last loop: 4 x 16 of the last two loops.
   A GEMM whose column count no vector width divides (scores over 77 keys) is
   padded to a multiple of 16 columns first.
   The GEMM's and the convolution's elementwise epilogue (bias, activation,
   residual) runs on each tile while it is in L1, not in a second pass over
   memory. Otherwise (row reductions such as GroupNorm's statistics) the spatial
   loops are made parallel, and a reduction along contiguous memory accumulates
   in one partial result per vector lane;
4. a block that decodes packed weights (it reads int8/uint8/float16 buffers;
   kernels/dequant.py fuses it into its GEMM or conv) is computed under the
   consumer's parallel loop, which is made to run over the weight's output
   channels: each thread decodes the weight slice it uses, once.
A block it cannot read this way stays as it was.
"""

from __future__ import annotations

VECTOR_LANES = (16, 8, 4)
PACKED_DTYPES = ("int8", "uint8", "float16")
ROW_TILE = 4
MIN_PARALLEL = 64
CHANNEL_TILE = 4
GEMM_BLOCK_BYTES = 320 * 1024   # a column block of a GEMM's weight (K x block floats) held in L2
PAD_LANES = 16                  # a GEMM's columns that no vector width divides are padded to a multiple of this


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


def _column_block(sch, reduce, cols: int, lanes: int) -> int | None:
    """A GEMM's column block: the widest multiple of `lanes` dividing `cols` whose weight block
    (K x block floats) fits GEMM_BLOCK_BYTES; None for a non-GEMM (more than one reduction loop)."""
    if len(reduce) != 1:
        return None
    depth = _extent(sch, reduce[0])
    if depth is None:
        return None
    fits = [b for b in range(lanes, cols + 1, lanes) if cols % b == 0 and depth * b * 4 <= GEMM_BLOCK_BYTES]
    return max(fits) if fits else lanes


def _written_shape(sch, block) -> list:
    return [[int(d) for d in w.source.shape] for w in sch.get(block).writes]


def _epilogue_at(sch, block, loop, epilogues) -> None:
    """Moves the one elementwise consumer of a GEMM's output under `loop` (a register tile's loop),
    vectorized over the tile's columns; its name goes into `epilogues`."""
    consumers = sch.get_consumers(block)
    if len(consumers) != 1 or epilogues is None:
        return
    epi = consumers[0]
    if _written_shape(sch, epi) != _written_shape(sch, block):
        # not elementwise (a pad after a residual conv writes a border no tile covers: it would stay
        # unwritten, NaN in the VAE encoder's downsampler); it stays a pass of its own
        return
    try:
        sch.reverse_compute_at(epi, loop, preserve_unit_loops=False)
        inner = sch.get_loops(epi)[-1]
        if _lanes(_extent(sch, inner)):
            sch.vectorize(inner)
    except Exception:  # noqa: BLE001 - not an elementwise consumer of the tile: it stays a pass of its own
        return
    epilogues.add(sch.get(epi).name_hint)


def _channel_position(sch, block, n_spatial: int) -> int | None:
    """A convolution's output-channel loop: the one spatial loop (not among the last two) that
    indexes the weight but not the input (the buffer the last spatial loop indexes)."""
    stmt = sch.get(block)
    written = {w.source for w in stmt.writes}
    reads = [r for r in stmt.reads if not any(r.source.same_as(w) for w in written)]
    last = stmt.iter_vars[n_spatial - 1].var
    inputs = [r for r in reads if any(_uses(d.min, last) for d in r.region)]
    weights = [r for r in reads if not any(_uses(d.min, last) for d in r.region)]

    def indexes(regions, var):
        return any(_uses(d.min, var) for r in regions for d in r.region)

    found = [k for k in range(n_spatial - 2)
             if indexes(weights, stmt.iter_vars[k].var) and not indexes(inputs, stmt.iter_vars[k].var)]
    return found[0] if len(found) == 1 else None


def _schedule_conv(sch, block, spatial, reduce, channel, lanes, epilogues):
    """A convolution's register tile: CHANNEL_TILE output channels x `lanes` output columns, so each
    vector of input serves CHANNEL_TILE broadcast weights. The output rows (and batch) run in
    parallel outside the channels, so a band of input rows stays in cache while every channel
    passes over it; the epilogue runs on each tile."""
    *rest, last = spatial
    chan_outer, chan = sch.split(spatial[channel], [None, CHANNEL_TILE])
    col_outer, col = sch.split(last, [None, lanes])
    rows = [lp for i, lp in enumerate(rest) if i != channel]
    sch.reorder(*rows, chan_outer, col_outer, *reduce, chan, col)
    par = sch.fuse(*rows, chan_outer)
    sch.parallel(par)
    sch.decompose_reduction(block, reduce[0])
    sch.unroll(chan)
    sch.unroll(col)
    _epilogue_at(sch, block, col_outer, epilogues)
    return par


def _pad_columns(sch, block, spatial, reduce):
    """A GEMM whose column count no vector width divides (cross-attention's scores over 77 keys)
    computed over columns padded to a multiple of PAD_LANES: the operand it reads along the
    columns is copied once with zero columns added (a small copy: K x N), the extra outputs are
    dropped as each tile is written. Returns the block's (spatial, reduce) loops, or None when it
    does not apply."""
    cols = _extent(sch, spatial[-1])
    if len(reduce) != 1 or cols is None or cols < PAD_LANES:
        return None
    n_spatial = len(spatial)
    sch.pad_einsum(block, [1] * (n_spatial - 1) + [PAD_LANES, 1])
    for producer in sch.get_producers(block):     # the padded copies, made once
        _schedule_spatial(sch, sch.get_loops(producer))
    [unpad] = sch.get_consumers(block)
    if sch.get_consumers(unpad):                  # an epilogue follows: it reads the padded result
        sch.compute_inline(unpad)
    loops = sch.get_loops(block)
    return loops[:n_spatial], loops[n_spatial:]


def _vector_partials(sch, block, spatial, reduce):
    """A row reduction whose innermost reduction loop runs along contiguous memory (GroupNorm's
    statistics over a group's pixels): `lanes` partial results, one per vector lane, so the loop
    vectorizes (float addition is not reassociated otherwise), then summed per row. The rows run in
    parallel. Returns the parallel loop, or None when it does not apply."""
    n_spatial = len(spatial)
    lanes = _lanes(_extent(sch, reduce[-1]))
    last = sch.get(block).iter_vars[n_spatial + len(reduce) - 1].var
    extents = [_extent(sch, lp) for lp in spatial]
    if lanes is None or None in extents or not _contiguous_in_reads(sch, block, last):
        return None
    inner = sch.split(reduce[-1], [None, lanes])[1]
    partial = sch.rfactor(inner, n_spatial)
    loops = sch.get_loops(partial)
    lane = loops[-1]
    sch.reorder(*[lp for lp in loops if not lp.same_as(lane)][:n_spatial], lane)
    loops = sch.get_loops(partial)
    par = sch.fuse(*loops[:n_spatial]) if n_spatial > 1 else loops[0]
    sch.parallel(par)
    sch.decompose_reduction(partial, sch.get_loops(partial)[1])
    sch.unroll(sch.get_loops(partial)[-1])
    sch.reverse_compute_at(block, par)
    return par


def _schedule_reduction(sch, info, spatial, reduce, weight_pos=None, epilogues=None):
    """Returns the parallel loop. `weight_pos`: the spatial loop that indexes a decoded weight's
    output channels; it becomes the outermost, parallel loop, so that each weight slice is
    decoded once, by one thread, under it."""
    block = info.block_rv
    last_var = sch.get(block).iter_vars[len(spatial) - 1].var
    lanes = _lanes(_extent(sch, spatial[-1]))
    if weight_pos is None and not _contiguous_in_reads(sch, block, last_var):
        par = _vector_partials(sch, block, spatial, reduce)
        if par is not None:
            return par
    if lanes is None and weight_pos is None and _contiguous_in_reads(sch, block, last_var):
        padded = _pad_columns(sch, block, spatial, reduce)
        if padded is not None:
            spatial, reduce = padded
            lanes = _lanes(_extent(sch, spatial[-1]))
    if lanes is None or not _contiguous_in_reads(sch, block, last_var):
        if weight_pos is not None:
            sch.reorder(spatial[weight_pos], *(s for i, s in enumerate(spatial) if i != weight_pos))
            par = spatial[weight_pos]
        else:
            par = sch.fuse(*spatial) if len(spatial) > 1 else spatial[0]
        sch.parallel(par)
        return par
    channel = _channel_position(sch, block, len(spatial)) if weight_pos is None and len(reduce) > 1 else None
    if channel is not None and _extent(sch, spatial[channel]) % CHANNEL_TILE == 0:
        return _schedule_conv(sch, block, spatial, reduce, channel, lanes, epilogues)
    # register tile: ROW_TILE x lanes outputs accumulate while the reduction loops run
    *outer, last = spatial
    tiles = []
    weight_loop = spatial[weight_pos] if weight_pos is not None else None
    if outer and weight_pos != len(spatial) - 2 and _extent(sch, outer[-1]) % ROW_TILE == 0:
        row_outer, row = sch.split(outer[-1], [None, ROW_TILE])
        outer = [*outer[:-1], row_outer]
        tiles.append(row)
    block_cols = _column_block(sch, reduce, _extent(sch, last), lanes) if weight_pos is None and tiles else None
    if block_cols:
        col_block, col_outer, col = sch.split(last, [None, block_cols // lanes, lanes])
        tiles.append(col)
        sch.reorder(*outer[:-1], col_block, outer[-1], col_outer, *reduce, *tiles)
        par = sch.fuse(*outer[:-1], col_block, outer[-1], col_outer)   # one tile per iteration: few rows still spread
        sch.parallel(par)
        sch.decompose_reduction(block, reduce[0])
        for tile in tiles:
            sch.unroll(tile)
        _epilogue_at(sch, block, par, epilogues)
        return par
    col_outer, col = sch.split(last, [None, lanes])
    tiles.append(col)
    if weight_pos is None:
        sch.reorder(*outer, col_outer, *reduce, *tiles)
        par = sch.fuse(*outer, col_outer) if outer else col_outer
    else:
        par = col_outer if weight_pos == len(spatial) - 1 else weight_loop
        sch.reorder(par, *(lp for lp in [*outer, col_outer] if lp != weight_loop and lp != par), *reduce, *tiles)
    sch.parallel(par)
    sch.decompose_reduction(block, reduce[0])
    for tile in tiles:  # `vectorize` refuses loops under a reduction; LLVM's SLP pass vectorizes the lanes
        sch.unroll(tile)
    return par


def _schedule_block(sch, info, weight_pos=None, epilogues=None):
    """Schedule one block; returns False when it cannot, else True or (reductions) the parallel loop."""
    kinds = info.dom_kind()
    spatial = [it.loop_rv for it in info.iters if it.kind == "S"]
    reduce = [it.loop_rv for it in info.iters if it.kind == "R"]
    if not spatial or kinds != "S" * len(spatial) + "R" * len(reduce):
        return False  # only the S..S R..R shape
    if not reduce:
        return _schedule_spatial(sch, spatial)
    return _schedule_reduction(sch, info, spatial, reduce, weight_pos, epilogues)


def _is_copy(sch, block) -> bool:
    """A block that only moves values (a reshape or transpose inside a fused kernel)."""
    body = sch.get(block).body
    return type(body).__name__ == "BufferStore" and type(body.value).__name__ in ("BufferLoad", "TensorLoad")


def _inline_elementwise(sch, infos) -> None:
    """Inline each elementwise block whose consumers are all elementwise, and each copy (GroupNorm's
    reshape into groups: its consumers read the source instead of a copy of the whole tensor)."""
    outputs = {sch.get(b).name_hint for b in sch.get_output_blocks(sch.get_sblock("root"))}
    by_name = {i.name: i for i in infos}
    for info in infos:
        if not info.is_injective() or info.name in outputs:
            continue
        consumers = [sch.get(c).name_hint for c in sch.get_consumers(info.block_rv)]
        if consumers and (_is_copy(sch, info.block_rv)
                          or all(c in by_name and by_name[c].is_injective() for c in consumers)):
            try:
                sch.compute_inline(info.block_rv)
            except Exception:  # noqa: BLE001 - not inlinable (e.g. reads that do not line up)
                continue


def _reads_packed(sch, block) -> bool:
    """True for a block that reads stored weights other than float32 (a dequantizing decode)."""
    return any(str(region.source.dtype) in PACKED_DTYPES for region in sch.get(block).reads)


def _weight_positions(sch, infos, decodes) -> dict:
    """Reduction block name -> the position of its spatial loop that indexes a decoded weight
    (matmul: the output column; conv: the output channel)."""
    found = {}
    for dec in decodes:
        written = sch.get(dec.block_rv).writes[0].source
        for consumer in sch.get_consumers(dec.block_rv):
            block = sch.get(consumer)
            info = next((i for i in infos if i.name == block.name_hint), None)
            if info is None or info.is_injective():
                continue
            n_spatial = sum(1 for it in info.iters if it.kind == "S")
            for region in block.reads:
                if region.source.same_as(written):
                    used = [k for k, iv in enumerate(block.iter_vars[:n_spatial])
                            if any(_uses(r.min, iv.var) for r in region.region)]
                    if len(used) == 1:
                        found[info.name] = used[0]
    return found


def _decode_under(sch, block, loops: dict) -> bool:
    """Compute a decode block under the parallel loop of the GEMM/conv consuming it, which runs over
    the weight's output channels: each weight slice is decoded once, by the thread that uses it,
    into a buffer sized for that slice."""
    consumers = [sch.get(c).name_hint for c in sch.get_consumers(block)]
    if len(consumers) != 1 or consumers[0] not in loops:
        return False
    sch.compute_at(block, loops[consumers[0]], preserve_unit_loops=False)
    inner = sch.get_loops(block)[-1]
    lanes = _lanes(_extent(sch, inner))
    if lanes:   # a 1x1 conv's innermost loop is all its input channels: vectors of `lanes`, not of 1280
        sch.vectorize(sch.split(inner, [None, lanes])[1])
    return True


def _row_chain(sch, infos) -> bool:
    """Schedule a chain of row reductions and elementwise steps over the same rows (softmax: max,
    exp, sum, divide; layer norm) as one pass per row: the rows run in parallel and every block
    is computed under its row, so a row's intermediates stay in L1 instead of each step making a
    pass over the whole tensor. False when the function is not such a chain."""
    *steps, out = infos
    if not steps or not out.is_injective() or not any(not i.is_injective() for i in steps):
        return False
    out_loops = sch.get_loops(out.block_rv)
    extents = [_extent(sch, lp) for lp in out_loops]
    if None in extents or len(extents) < 2 or _prod(extents[:-1]) < MIN_PARALLEL:
        return False
    for info in steps:
        dims = [_extent(sch, it.loop_rv) for it in info.iters]
        kinds = info.dom_kind()
        if info.is_injective() and dims != extents:
            return False
        if not info.is_injective() and (kinds != "S" * (len(extents) - 1) + "R" or dims != extents):
            return False
    rows = sch.fuse(*out_loops[:-1])
    sch.parallel(rows)
    for info in reversed(steps):
        sch.compute_at(info.block_rv, rows, preserve_unit_loops=False)
    lanes = _lanes(extents[-1])
    if lanes:   # the elementwise steps in vectors along the row (the reductions stay scalar: float order)
        for info in [*steps, out]:
            if info.is_injective():
                sch.vectorize(sch.split(sch.get_loops(info.block_rv)[-1], [None, lanes])[1])
    return True


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
            trial = sch.copy()
            try:
                if _row_chain(trial, infos):
                    return trial
            except Exception:  # noqa: BLE001 - a primitive refused: schedule block by block below
                pass
            changed = False
            decodes = [i for i in infos if i.is_injective() and _reads_packed(sch, i.block_rv)]
            weight_pos = _weight_positions(sch, infos, decodes)
            loops = {}  # reduction block name -> its parallel loop
            epilogues: set = set()  # blocks a GEMM's schedule computes on its tiles
            for info in [i for i in infos if i not in decodes] + decodes:
                if info.name in epilogues:
                    continue
                trial = sch.copy()
                trial_epilogues = set(epilogues)
                try:
                    if info in decodes and _decode_under(trial, info.block_rv, loops):
                        done = True
                    else:
                        done = _schedule_block(trial, info, weight_pos.get(info.name), trial_epilogues)
                except Exception:  # noqa: BLE001 - a primitive refused: keep this block unscheduled
                    continue
                if done:
                    sch = trial
                    epilogues = trial_epilogues
                    changed = True
                    if done is not True:   # decompose_reduction renamed the block "<name>_update"
                        loops[info.name] = loops[info.name + "_update"] = done
            return sch if changed else None

    return ParallelVectorize()
