"""Attention on a CPU as one tiled online-softmax ("flash") kernel, blocked for registers and L1.

softmax(scale · q·kᵀ)·v with q (batch·heads, queries, d), kᵀ (batch·heads, d, keys), v
(batch·heads, keys, dv). Each thread takes a block of BLOCK_ROWS query rows of one head and walks
the keys a tile at a time:
1. the tile's scores, BLOCK_ROWS x tile, as a GEMM whose register tile is ROW_TILE rows x
   COL_TILE keys (kᵀ is key-contiguous: each vector of keys serves ROW_TILE broadcast q values);
2. softmax on the tile, row by row: the running maximum and sum are updated and the scores are
   turned into exp(score - max) in place, with a polynomial exp that vectorizes (libm's does not);
3. the output block (BLOCK_ROWS x dv, in L1) is rescaled by exp(old max - new max) and gets the
   tile's probabilities times v, a GEMM whose register tile is PV_ROWS rows x a chunk of dv.
The scores of a tile never leave L1; no (queries x keys) matrix is written. Each loaded kᵀ/v tile
serves BLOCK_ROWS rows, where the per-row form (kernels/attention.py `flash_func_cpu`) reloads it
for every row. Numpy reference: `attention`.
"""

from __future__ import annotations

import numpy as np

BLOCK_ROWS = 32       # query rows per thread's block: the output block (32 x dv floats) stays in L1
ROW_TILE = 4          # score register tile: 4 rows x 16 keys = 8 ymm accumulators on AVX2
COL_TILE = 16
PV_ROWS = 2           # output register tile: 2 rows x a chunk of dv of at most PV_COLS (10 ymm accumulators)
PV_COLS = 40
KEY_TILE = 64        # keys per tile; up to 2 tiles' worth of keys make one tile (cross-attention's 77: 80)
LANES = 8
EXP_FLOOR = -87.0     # exp below this is under float32's smallest normal: clamped, its value ~0
KERNEL = "edgegen.flash_attention_cpu"


def attention(q: np.ndarray, kt: np.ndarray, v: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """softmax(scale · q·kt)·v over the last two axes, in float64."""
    s = scale * np.einsum("bsd,bdl->bsl", q.astype(np.float64), kt.astype(np.float64))
    s = np.exp(s - s.max(-1, keepdims=True))
    return np.einsum("bsl,bld->bsd", s / s.sum(-1, keepdims=True), v.astype(np.float64)).astype(q.dtype)


def fast_exp(x: np.ndarray) -> np.ndarray:
    """The kernel's exp for x <= 0 (float32): 2^n · p(r), x = n·ln2 + r, |r| <= ln2/2, p Cephes'
    degree-7 polynomial; relative error ~1e-7."""
    x = np.maximum(x.astype(np.float32), np.float32(EXP_FLOOR))
    n = np.floor(x * np.float32(1.44269504) + np.float32(0.5))
    r = x - n * np.float32(0.693359375) + n * np.float32(2.12194440e-4)
    return (_poly(r) * np.ldexp(np.float32(1), n.astype(np.int32))).astype(np.float32)


_EXP_COEFFS = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1,
               5.0000001201e-1)


def _poly(r):
    p = r * 0 + _EXP_COEFFS[0]
    for c in _EXP_COEFFS[1:]:
        p = p * r + c
    return p * r * r + r + 1


def _tir_exp(x):
    """fast_exp as a TIR expression of `x` (a load: it is read more than once)."""
    from tvm import tirx

    f32 = "float32"
    x = tirx.max(x, tirx.const(EXP_FLOOR, f32))
    n = tirx.floor(x * tirx.const(1.44269504, f32) + tirx.const(0.5, f32))
    r = x - n * tirx.const(0.693359375, f32) + n * tirx.const(2.12194440e-4, f32)
    p = tirx.const(_EXP_COEFFS[0], f32)
    for c in _EXP_COEFFS[1:]:
        p = p * r + tirx.const(c, f32)
    p = p * r * r + r + tirx.const(1.0, f32)
    bits = tirx.shift_left(tirx.Cast("int32", n) + 127, 23)
    return p * tirx.reinterpret(f32, bits)


def key_tile(length: int) -> int:
    """Keys per tile: KEY_TILE, or all the keys (rounded up to COL_TILE) when they are few. A
    last tile past the keys reads zeros for kᵀ and the last row of v, and its scores past the
    keys are float32's lowest, so their probabilities vanish."""
    return KEY_TILE if length > 2 * KEY_TILE else -(-length // COL_TILE) * COL_TILE


def unsupported(s: int, length: int, d: int, dv: int) -> str | None:
    """Why the kernel cannot take these shapes (None: it can)."""
    if s % ROW_TILE:
        return f"{s} queries: not a multiple of {ROW_TILE}"
    if dv % LANES:
        return f"value dim {dv}: not a multiple of {LANES}"
    return None


def flash_func(bh: int, s: int, length: int, d: int, dv: int, scale: float = 1.0):
    """The kernel for these shapes (check `unsupported` first). `scale` multiplies the scores,
    so the q·scale of torch's export needs no pass of its own."""
    from tvm import tirx
    from tvm.script import tirx as T

    why = unsupported(s, length, d, dv)
    if why is not None:
        raise ValueError(f"flash attention on a CPU: {why}; use the GEMM chain for this call")
    tile = key_tile(length)
    rows = next(r for r in (BLOCK_ROWS, 16, 8, ROW_TILE) if s % r == 0)
    blocks = s // rows
    kv_tiles = -(-length // tile)
    neg = T.float32(-3.4028234663852886e38)
    padded = kv_tiles * tile != length
    chunk = max(c for c in range(LANES, PV_COLS + 1, LANES) if dv % c == 0)

    def clamp(key):         # a key index past the last key reads the last (its probability is 0)
        return tirx.min(key, length - 1) if padded else key

    def within(key, value, past):
        return tirx.if_then_else(key < length, value, past) if padded else value

    @T.prim_func(s_tir=True)
    def main(q: T.Buffer((bh, s, d), "float32"), kt: T.Buffer((bh, d, length), "float32"),
             v: T.Buffer((bh, length, dv), "float32"), o: T.Buffer((bh, s, dv), "float32")):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True, "edgegen.kernel": KERNEL, "op_pattern": 8})
        for blk in T.parallel(bh * blocks):
            with T.sblock("flash"):
                vb = T.axis.spatial(bh * blocks, blk)
                T.reads()
                T.writes()
                sc = T.sblock_alloc_buffer((rows, tile), "float32", scope="local")
                acc = T.sblock_alloc_buffer((rows, dv), "float32", scope="local")
                run_max = T.sblock_alloc_buffer((rows,), "float32", scope="local")
                run_sum = T.sblock_alloc_buffer((rows,), "float32", scope="local")
                alpha = T.sblock_alloc_buffer((rows,), "float32", scope="local")
                lane = T.sblock_alloc_buffer((LANES,), "float32", scope="local")
                c = T.sblock_alloc_buffer((ROW_TILE, COL_TILE), "float32", scope="local")
                c2 = T.sblock_alloc_buffer((PV_ROWS, chunk), "float32", scope="local")
                kp = T.sblock_alloc_buffer((d, tile), "float32", scope="local")
                top = T.sblock_alloc_buffer((1,), "float32", scope="local")
                b: T.let[T.int32] = vb // blocks
                r0: T.let[T.int32] = vb % blocks * rows
                for i in T.serial(rows):
                    run_max[i] = neg
                    run_sum[i] = T.float32(0)
                    for j in T.vectorized(dv):
                        acc[i, j] = T.float32(0)
                for kv in T.serial(kv_tiles):
                    for kk, jo in T.grid(d, tile // LANES):
                        for j in T.vectorized(LANES):
                            kp[kk, jo * LANES + j] = within(
                                kv * tile + jo * LANES + j, kt[b, kk, clamp(kv * tile + jo * LANES + j)], T.float32(0))
                    for i0, j0 in T.grid(rows // ROW_TILE, tile // COL_TILE):
                        for i in T.unroll(ROW_TILE):
                            for jo in T.unroll(COL_TILE // LANES):
                                for j in T.vectorized(LANES):
                                    c[i, jo * LANES + j] = T.float32(0)
                        for kk in T.serial(d):
                            for i in T.unroll(ROW_TILE):
                                for jo in T.unroll(COL_TILE // LANES):
                                    for j in T.vectorized(LANES):
                                        c[i, jo * LANES + j] = c[i, jo * LANES + j] + q[b, r0 + i0 * ROW_TILE + i, kk] * kp[
                                            kk, j0 * COL_TILE + jo * LANES + j]
                        for i in T.unroll(ROW_TILE):
                            for jo in T.unroll(COL_TILE // LANES):
                                for j in T.vectorized(LANES):
                                    sc[i0 * ROW_TILE + i, j0 * COL_TILE + jo * LANES + j] = within(
                                        kv * tile + j0 * COL_TILE + jo * LANES + j, c[i, jo * LANES + j] * T.float32(scale),
                                        neg)
                    for i in T.serial(rows):
                        for j in T.vectorized(LANES):
                            lane[j] = sc[i, j]
                        for j0 in T.serial(tile // LANES - 1):
                            for j in T.vectorized(LANES):
                                lane[j] = T.max(lane[j], sc[i, (j0 + 1) * LANES + j])
                        top[0] = run_max[i]
                        for j in T.unroll(LANES):
                            top[0] = T.max(top[0], lane[j])
                        alpha[i] = _tir_exp(run_max[i] - top[0])
                        run_max[i] = top[0]
                        for j0 in T.serial(tile // LANES):
                            for j in T.vectorized(LANES):
                                sc[i, j0 * LANES + j] = sc[i, j0 * LANES + j] - top[0]
                            for j in T.vectorized(LANES):
                                sc[i, j0 * LANES + j] = _tir_exp(sc[i, j0 * LANES + j])
                        for j in T.vectorized(LANES):
                            lane[j] = sc[i, j]
                        for j0 in T.serial(tile // LANES - 1):
                            for j in T.vectorized(LANES):
                                lane[j] = lane[j] + sc[i, (j0 + 1) * LANES + j]
                        run_sum[i] = run_sum[i] * alpha[i]
                        for j in T.unroll(LANES):
                            run_sum[i] = run_sum[i] + lane[j]
                    for i0, jc in T.grid(rows // PV_ROWS, dv // chunk):
                        for i in T.unroll(PV_ROWS):
                            for jo in T.unroll(chunk // LANES):
                                for j in T.vectorized(LANES):
                                    c2[i, jo * LANES + j] = acc[i0 * PV_ROWS + i, jc * chunk + jo * LANES + j] * alpha[
                                        i0 * PV_ROWS + i]
                        for k in T.serial(tile):
                            for i in T.unroll(PV_ROWS):
                                for jo in T.unroll(chunk // LANES):
                                    for j in T.vectorized(LANES):
                                        c2[i, jo * LANES + j] = c2[i, jo * LANES + j] + sc[i0 * PV_ROWS + i, k] * v[
                                            b, clamp(kv * tile + k), jc * chunk + jo * LANES + j]
                        for i in T.unroll(PV_ROWS):
                            for jo in T.unroll(chunk // LANES):
                                for j in T.vectorized(LANES):
                                    acc[i0 * PV_ROWS + i, jc * chunk + jo * LANES + j] = c2[i, jo * LANES + j]
                for i in T.serial(rows):
                    for j in T.vectorized(dv):
                        o[b, r0 + i, j] = acc[i, j] / run_sum[i]

    return main


# --- the rewrite: torch's decomposed scaled_dot_product_attention -> this kernel, where it wins ---------------

# Scores (batch·heads x queries x keys floats) below this stay a GEMM -> softmax -> GEMM chain, whose
# scores then fit in L2. Measured on 2 threads, 2 x 8 heads, flash vs chain vs torch's SDPA, min ms of 3 on a
# loaded 2-core AVX2 machine: 4096x4096 d40 2127/4837/2180; 1024x1024 d80 230/288/260; 256x256 d160
# 31/42/32; 4096x77 d40 43/85/60; 1024x77 d80 29/48/60; 256x77 d160 (1.2 MiB of scores) 9.3/9.5/10.9.
MIN_SCORE_BYTES = 1 << 20


def flops(site: dict) -> float:
    """FLOPs of a call (q·kᵀ and p·v: 4·BH·Q·K·D), which TVM cannot count in these loops."""
    return 4.0 * site["batch_heads"] * site["queries"] * site["keys"] * site["head_dim"]


def make_fusion_pass(decisions: list):
    """Replace softmax(scale · q·kt)·v (torch's decomposed scaled_dot_product_attention once the
    safe-softmax guard is dropped and the scale folded: kernels/attention.make_pass,
    kernels/attention_scale.make_pass; the scale multiply optional, reshapes around the softmax
    optional) by `flash_func` where the kernel takes the shapes and the scores are at least
    MIN_SCORE_BYTES; append one decision per call site to `decisions`, with its reason."""
    import tvm
    from tvm import relax
    from tvm.relax.dpl import is_const, is_op, rewrite_call, wildcard

    from .attention import attention_dims
    from .relax_util import quick_stack

    q, kt, v, scale = wildcard(), wildcard(), wildcard(), is_const()
    product = is_op("relax.matmul")(q, kt)
    scaled = is_op("relax.multiply")(product, scale)
    scores = scaled | product
    shaped = is_op("relax.reshape")(scores, wildcard()) | scores
    probs = is_op("relax.nn.softmax")(shaped)
    flat = is_op("relax.reshape")(probs, wildcard()) | probs
    out = is_op("relax.matmul")(flat, v)

    @tvm.transform.module_pass(opt_level=0, name="EdgegenCPUAttention")
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
            factor = 1.0
            if scale in matches:
                value = np.asarray(matches[scale].value.numpy())
                if value.size != 1:
                    return expr
                factor = float(value.reshape(()))
            score_bytes = bh * s * length * 4
            site = {"queries": s, "keys": length, "head_dim": d, "batch_heads": bh, "score_bytes": score_bytes}
            why = unsupported(s, length, d, dv)
            if why is None and score_bytes < MIN_SCORE_BYTES:
                why = f"scores {score_bytes / 1024:.0f} KiB < {MIN_SCORE_BYTES >> 10} KiB: the GEMMs' tiles run full"
            if why is not None:
                decisions.append({**site, "kernel": "gemm-softmax-gemm", "reason": why})
                kept.append(expr)
                return expr
            decisions.append({**site, "kernel": "flash", "key_tile": key_tile(length),
                              "reason": f"scores {score_bytes / 2**20:.1f} MiB: tiles of q rows x keys in L1, "
                                        f"online softmax, no score matrix in memory"})
            with quick_stack():     # parsed inside a Relax pass: see relax_util.quick_stack
                func = flash_func(bh, s, length, d, dv, factor)
            name = f"edgegen_flash_attention_cpu_{len(decisions)}"
            decisions[-1]["function"] = name
            gv = builder.add_func(func.with_attr("global_symbol", name), name)
            return relax.call_tir(gv, [matches[q], matches[kt], matches[v]], relax.TensorType((bh, s, dv), "float32"))

        for gv, func in list(mod.functions_items()):
            if isinstance(func, relax.Function):
                builder.update_func(gv, rewrite_call(out, rewrite, func))
        return builder.get()

    return _pass

