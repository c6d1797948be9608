"""Pass `DropSafeSoftmaxGuard`: torch exports scaled_dot_product_attention's softmax as
torch's "safe softmax": softmax(x), then where(every entry of the row is -inf, 0, softmax).
The guard costs a boolean tensor of the scores' size, an int8 reduction and a select per
attention call, and WGSL has no 8-bit or boolean storage to hold them. Attention without a
mask (diffusion UNets' and DiTs') cannot produce a row of -inf from finite inputs, so where the
scores are a plain q·kᵀ product the guard is dropped; scores with a mask added (a text
encoder's causal mask) keep it, with the row test counted in int32.
Numpy reference: `safe_softmax` (what the guard computes)."""

from __future__ import annotations

import numpy as np


def safe_softmax(x: np.ndarray) -> np.ndarray:
    m = np.max(x, axis=-1, keepdims=True)
    e = np.exp(x - np.where(np.isfinite(m), m, 0))
    with np.errstate(invalid="ignore"):     # rows of -inf: 0/0, replaced below
        s = e / np.sum(e, axis=-1, keepdims=True)
    return np.where(np.all(x == -np.inf, axis=-1, keepdims=True), 0.0, s).astype(x.dtype)


def make_pass():
    import tvm
    from tvm import relax
    from tvm.relax.dpl import is_const, is_op, rewrite_call, wildcard

    def guard(scores):
        softmax = is_op("relax.nn.softmax")(scores)
        finite = is_op("relax.logical_not")(is_op("relax.equal")(scores, is_const()))
        any_finite = is_op("relax.astype")(is_op("relax.max")(is_op("relax.astype")(finite)))
        zeros = is_op("relax.full_like")(softmax, is_const())
        return is_op("relax.where")(is_op("relax.logical_not")(any_finite), zeros, softmax), softmax, finite

    product = is_op("relax.matmul")(wildcard(), wildcard())
    plain, plain_softmax, _ = guard(is_op("relax.reshape")(product, wildcard()) | product)   # q·kᵀ, no mask
    masked, masked_softmax, masked_finite = guard(wildcard())

    def drop(_expr, matches):
        return matches[plain_softmax]

    def widen(expr, matches):
        """Keep the guard, its row test a count in int32 rather than an int8 maximum (WGSL has
        no int8, and no literal for the int32 maximum's initial value, -2**31)."""
        count = relax.op.sum(relax.op.astype(matches[masked_finite], "int32"), axis=[-1], keepdims=True)
        any_finite = relax.op.greater(count, relax.const(0, "int32"))
        return relax.op.where(relax.op.logical_not(any_finite), expr.args[1], matches[masked_softmax])

    @tvm.transform.module_pass(opt_level=0, name="DropSafeSoftmaxGuard")
    def _pass(mod, _ctx):
        for gv, func in list(mod.functions_items()):
            if isinstance(func, relax.Function):
                func = rewrite_call(plain, drop, func)
                mod.update_func(gv, rewrite_call(masked, widen, func))
        return mod

    return _pass


# --- attention: a tiled online-softmax ("flash") kernel, or the partially fused GEMM chain ---------------------

FLASH = "edgegen.flash_attention"
FLASH_PREFIX = "edgegen_flash_attention"
# Scores (batch·heads × queries × keys, float32) at least this big go through the flash kernel, which
# never writes them to memory; smaller ones stay a GEMM → softmax → GEMM chain (TVM fuses the softmax,
# dlight tiles the GEMMs), where the scores fit in the GPU's caches.
FLASH_MIN_SCORE_BYTES = 1 << 20
MAX_KV_TILE = 32
NEG_INF = -3.4028234663852886e38      # float32's lowest: a running maximum's start


def attention(q: np.ndarray, kt: np.ndarray, v: np.ndarray) -> np.ndarray:
    """softmax(q·kt)·v over the last two axes (the scale is already in q and kt)."""
    s = np.einsum("bsd,bdl->bsl", q.astype(np.float64), kt.astype(np.float64))
    s = np.exp(s - s.max(-1, keepdims=True))
    return np.einsum("bsl,bld->bsd", s / s.sum(-1, keepdims=True), v.astype(np.float64)).astype(q.dtype)


def kv_tile(d: int, dv: int, local_memory_bytes: int) -> int:
    """Keys per tile: the most (a power of two, at most 32) whose K and V rows fit in local memory."""
    tile = MAX_KV_TILE
    while tile > 1 and tile * (d + dv) * 4 > local_memory_bytes:
        tile //= 2
    return tile


def flash_func(bh: int, s: int, length: int, d: int, dv: int, rows: int, tile: int):
    """One workgroup per (batch·head, `rows` queries), one thread per query row. The workgroup
    walks the keys `tile` at a time: loads K and V tiles into local memory, then each thread
    scores its row against the tile, updates its running maximum and sum, rescales its output
    accumulator and adds the tile's weighted values. Scores never leave the thread."""
    from tvm.script import tirx as T

    row_tiles = (s + rows - 1) // rows
    kv_tiles = (length + tile - 1) // tile
    k_loads = (tile * d + rows - 1) // rows
    v_loads = (tile * dv + rows - 1) // rows

    @T.prim_func(s_tir=True)
    def main(q: T.Buffer((bh, s, d), "float32"), kt: T.Buffer((bh, d, length), "float32"),
             v: T.Buffer((bh, length, dv), "float32"), o: T.Buffer((bh, s, dv), "float32")):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True, "edgegen.kernel": FLASH, "op_pattern": 8})
        for lb in T.thread_binding(bh, thread="blockIdx.y"):
            for lr in T.thread_binding(row_tiles, thread="blockIdx.x"):
                for lt in T.thread_binding(rows, thread="threadIdx.x"):
                    with T.sblock("flash"):
                        b, r, t = T.axis.remap("SSS", [lb, lr, lt])
                        T.reads()
                        T.writes()
                        k_tile = T.sblock_alloc_buffer((tile, d), "float32", scope="shared")
                        v_tile = T.sblock_alloc_buffer((tile, dv), "float32", scope="shared")
                        q_row = T.sblock_alloc_buffer((d,), "float32", scope="local")
                        acc = T.sblock_alloc_buffer((dv,), "float32", scope="local")
                        score = T.sblock_alloc_buffer((tile,), "float32", scope="local")
                        state = T.sblock_alloc_buffer((3,), "float32", scope="local")   # max, sum, new max
                        row: T.let[T.int32] = T.min(r * rows + t, s - 1)
                        for j in T.serial(d):
                            q_row[j] = q[b, row, j]
                        for j in T.serial(dv):
                            acc[j] = T.float32(0)
                        state[0] = T.float32(NEG_INF)
                        state[1] = T.float32(0)
                        for kv in T.serial(kv_tiles):
                            T.tvm_storage_sync("shared")
                            for i in T.serial(k_loads):
                                if i * rows + t < tile * d:
                                    key: T.let[T.int32] = kv * tile + (i * rows + t) // d
                                    k_tile[(i * rows + t) // d, (i * rows + t) % d] = T.if_then_else(
                                        key < length, kt[b, (i * rows + t) % d, T.min(key, length - 1)], T.float32(0))
                            for i in T.serial(v_loads):
                                if i * rows + t < tile * dv:
                                    key2: T.let[T.int32] = kv * tile + (i * rows + t) // dv
                                    v_tile[(i * rows + t) // dv, (i * rows + t) % dv] = T.if_then_else(
                                        key2 < length, v[b, T.min(key2, length - 1), (i * rows + t) % dv], T.float32(0))
                            T.tvm_storage_sync("shared")
                            state[2] = state[0]
                            for k in T.serial(tile):
                                score[k] = T.float32(0)
                                for j in T.serial(d):
                                    score[k] = score[k] + q_row[j] * k_tile[k, j]
                                if kv * tile + k >= length:
                                    score[k] = T.float32(NEG_INF)
                                state[2] = T.max(state[2], score[k])
                            state[1] = state[1] * T.exp(state[0] - state[2])
                            for j in T.serial(dv):
                                acc[j] = acc[j] * T.exp(state[0] - state[2])
                            for k in T.serial(tile):
                                score[k] = T.exp(score[k] - state[2])
                                state[1] = state[1] + score[k]
                                for j in T.serial(dv):
                                    acc[j] = acc[j] + score[k] * v_tile[k, j]
                            state[0] = state[2]
                        if r * rows + t < s:
                            for j in T.serial(dv):
                                o[b, r * rows + t, j] = acc[j] / state[1]

    return main


def flash_func_cpu(bh: int, s: int, length: int, d: int, dv: int, tile: int = MAX_KV_TILE):
    """The flash kernel's form for a CPU (TVM's llvm target): the same online softmax over key
    tiles, with the (batch·head, query) rows spread over threads instead of GPU workgroups. A
    row's scores for one tile are accumulated over the head dimension with the keys innermost
    (kᵀ is key-contiguous), its output over the tile's keys with the value dimension innermost:
    both inner loops are contiguous vector loads. The last, partial tile is a second expansion of
    the same macro, so no load needs a clamped index. No tile is staged: the cache holds it."""
    from tvm.script import tirx as T

    full, tail = divmod(length, tile)

    @T.macro(hygienic=False)
    def keys(start, n, d, dv):      # keys start .. start + n into row r's running state
        for k in T.vectorized(n):
            score[k] = T.float32(0)
        for j in T.serial(d):
            for k in T.vectorized(n):
                score[k] = score[k] + q[b, r, j] * kt[b, j, start + k]
        state[2] = state[0]
        for k in T.serial(n):
            state[2] = T.max(state[2], score[k])
        for k in T.serial(n):
            score[k] = T.exp(score[k] - state[2])
        state[1] = state[1] * T.exp(state[0] - state[2])
        for j in T.vectorized(dv):
            acc[j] = acc[j] * T.exp(state[0] - state[2])
        for k in T.serial(n):
            state[1] = state[1] + score[k]
            for j in T.vectorized(dv):
                acc[j] = acc[j] + score[k] * v[b, start + k, j]
        state[0] = state[2]

    @T.prim_func(s_tir=True)
    def main(q: T.Buffer((bh, s, d), "float32"), kt: T.Buffer((bh, d, length), "float32"),
             v: T.Buffer((bh, length, dv), "float32"), o: T.Buffer((bh, s, dv), "float32")):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True, "edgegen.kernel": FLASH, "op_pattern": 8})
        for lr in T.parallel(bh * s):
            with T.sblock("flash"):
                br = T.axis.spatial(bh * s, lr)
                T.reads()
                T.writes()
                acc = T.sblock_alloc_buffer((dv,), "float32", scope="local")
                score = T.sblock_alloc_buffer((tile,), "float32", scope="local")
                state = T.sblock_alloc_buffer((3,), "float32", scope="local")   # max, sum, new max
                b: T.let[T.int32] = br // s
                r: T.let[T.int32] = br % s
                for j in T.vectorized(dv):
                    acc[j] = T.float32(0)
                state[0] = T.float32(NEG_INF)
                state[1] = T.float32(0)
                for kv in T.serial(full):
                    keys(kv * tile, tile, d, dv)
                if tail > 0:
                    keys(full * tile, tail, d, dv)
                for j in T.vectorized(dv):
                    o[b, r, j] = acc[j] / state[1]

    return main


def make_fusion_pass(max_threads: int, local_memory_bytes: int, decisions: list, cpu: bool = False):
    """Replace softmax(q·kt)·v (torch's decomposed scaled_dot_product_attention, with or without
    the reshapes around the softmax) by the flash kernel where the scores are big; append one
    decision per call site to `decisions`: shapes, the variant chosen and why. `cpu` substitutes
    the kernel's CPU form (`flash_func_cpu`; the workgroup limits are then unused)."""
    import tvm
    from tvm import relax
    from tvm.relax.dpl import is_op, rewrite_call, wildcard

    from .relax_util import quick_stack

    q, kt, v = wildcard(), wildcard(), wildcard()
    scores = is_op("relax.matmul")(q, kt)
    shaped = is_op("relax.reshape")(scores, wildcard()) | scores
    probs = is_op("relax.nn.softmax")(shaped)
    flat = is_op("relax.reshape")(probs, wildcard()) | probs
    out = is_op("relax.matmul")(flat, v)

    @tvm.transform.module_pass(opt_level=0, name="EdgegenAttention")
    def _pass(mod, _ctx):
        builder = relax.BlockBuilder(mod)
        kept: list = []

        def rewrite(expr, matches):
            if any(k.same_as(expr) for k in kept):      # rewrite_call revisits what it kept
                return expr
            dims = attention_dims(matches, q, kt, v, probs, shaped)
            if dims is None:
                return expr
            bh, s, d, length, dv = dims
            score_bytes = bh * s * length * 4
            site = {"queries": s, "keys": length, "head_dim": d, "batch_heads": bh, "score_bytes": score_bytes}
            if score_bytes < FLASH_MIN_SCORE_BYTES:
                decisions.append({**site, "kernel": "partial",
                                  "reason": f"scores {score_bytes / 1024:.0f} KiB < {FLASH_MIN_SCORE_BYTES >> 10} KiB: "
                                            f"GEMM, fused softmax, GEMM (dlight's tiled GEMMs)"})
                kept.append(expr)
                return expr
            tile = MAX_KV_TILE if cpu else kv_tile(d, dv, local_memory_bytes)
            rows = None if cpu else min(max_threads, 64)
            decisions.append({**site, "kernel": "flash", "kv_tile": tile, "rows_per_workgroup": rows,
                              "reason": f"scores {score_bytes / 2**20:.1f} MiB ≥ {FLASH_MIN_SCORE_BYTES >> 20} MiB: "
                                        f"online softmax never writes them to memory"})
            with quick_stack():     # parsed inside a Relax pass: see quick_stack
                func = flash_func_cpu(bh, s, length, d, dv, tile) if cpu else flash_func(bh, s, length, d, dv, rows, tile)
            name = f"{FLASH_PREFIX}_{len(decisions)}"
            decisions[-1]["function"] = name
            gv = builder.add_func(func.with_attr("global_symbol", name), name)
            return relax.call_tir(gv, [matches[q], matches[kt], matches[v]], relax.TensorType((bh, s, dv), "float32"))

        for gv, func in list(mod.functions_items()):
            if isinstance(func, relax.Function):
                builder.update_func(gv, rewrite_call(out, rewrite, func))
        return builder.get()

    return _pass


def attention_dims(matches, q, kt, v, probs, shaped) -> tuple[int, int, int, int, int] | None:
    """(batch·heads, queries, head dim, keys, value dim) of a matched softmax(q·kt)·v whose operands
    are static 3-d float32 tensors and whose softmax runs along the keys; None for any other match."""
    shapes = [_static(matches[x]) for x in (q, kt, v)]
    if any(sh is None or len(sh) != 3 for sh in shapes) or any(
            str(matches[x].ty.dtype) != "float32" for x in (q, kt, v)):
        return None
    (bh, s, d), (_, d2, length), (_, length2, dv) = shapes
    if d2 != d or length2 != length or int(matches[probs].attrs.axis) not in (-1, len(_static(matches[shaped])) - 1):
        return None
    return bh, s, d, length, dv


def _static(expr) -> list[int] | None:
    shape = getattr(expr.ty, "shape", None)
    values = getattr(shape, "values", None)
    if values is None or not all(hasattr(d, "value") for d in values):
        return None
    return [int(d.value) for d in values]
