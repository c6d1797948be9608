"""Dequantizing GEMM and convolution: weights stay packed in memory and are decoded inside the kernel.

`decode_func` writes, for one packed weight (edgegen.core.quant's formats), a TE kernel
`edgegen_decode_*` that turns the stored arrays back into the float32 weight; the numpy
reference is edgegen.core.quant.dequantize_weight. `make_fusion_pass` (pattern name
`edgegen.decode_matmul` / `edgegen.decode_conv2d`) fuses each decode call into the
matmul or conv2d that consumes it, with the bias or residual add that follows, so no
float32 copy of the weight exists between kernels; `edgegen.decode_take` fuses a packed
lookup table's decode into its gather, which the CPU rule (cpu_loops inlines the decode)
and the GPU plans then compute for the looked-up rows only (numpy reference: take_rows). The CPU schedule rule
(cpu_loops) then computes the decode under the GEMM's parallel loop: each thread
decodes the weight slice its output tile needs into a small buffer.
"""

from __future__ import annotations

import numpy as np

DECODE_PREFIX = "edgegen_decode_"
PATTERN_NAMES = ("edgegen.decode_matmul", "edgegen.decode_conv2d", "edgegen.decode_take")


def _flat(shape: tuple, idx) -> tuple:
    """(row, column) of weight element `idx` seen as [shape[0], prod(shape[1:])]."""
    col = 0
    for d, i in zip(shape[1:], idx[1:]):
        col = col * d + i
    return idx[0], col


def _code(byte, bits: int, i):
    """The `bits`-wide unsigned code number `i` of a packed byte stream (edgegen.core.quant._pack);
    `byte(k)` reads byte k as int32."""
    if bits == 6:   # 4 codes in 3 bytes, little-end first
        word, j = i // 4, i % 4
        b = [byte(word * 3 + k) for k in range(3)]
        return ((b[0] | (b[1] << 8) | (b[2] << 16)) >> (6 * j)) & 0x3F
    per = 8 // bits
    return (byte(i // per) >> (bits * (i % per))) & ((1 << bits) - 1)


def as_words(arr: np.ndarray) -> np.ndarray:
    """A packed array's bytes as little-endian uint32 words (zero-padded to a whole word): the form
    GPU kernels read, since WGSL has no 8- or 16-bit storage types and OpenCL reads `half` only
    with cl_khr_fp16. The bytes are those of the CPU target's arrays."""
    raw = np.ascontiguousarray(arr).view(np.uint8).ravel()
    return np.pad(raw, (0, -raw.size % 4)).view("<u4").astype(np.uint32)


def _half_to_float(h):
    """An IEEE binary16 held in the low 16 bits of an int32 expression, as float32 (exact, with
    subnormals, infinities and NaN), from integer operations alone."""
    from tvm import tirx

    sign = (h & 0x8000) << 16
    exp = (h >> 10) & 0x1F
    man = h & 0x3FF
    normal = sign | ((exp + 112) << 23) | (man << 13)
    special = sign | 0x7F800000 | (man << 13)
    bits = tirx.Select(exp == 31, special, normal).astype("uint32")
    tiny = man.astype("float32") * tirx.const(2.0 ** -24, "float32")
    subnormal = tirx.Select(sign != 0, -tiny, tiny)
    return tirx.Select(exp == 0, subnormal, tirx.reinterpret("float32", bits))


def _loaders(holders: dict, arrays: dict, words: bool):
    """load(name, *index) -> the stored element as int32 (integer arrays) or float32 (float16 ones),
    from the arrays as they are (`words` False) or from as_words() of them."""
    def flat(name, idx):
        k = 0
        for d, i in zip(arrays[name].shape, idx):
            k = k * int(d) + i
        return k

    def load(name, *idx):
        dtype = arrays[name].dtype
        if not words:
            v = holders[name][idx]
            return v.astype("float32") if dtype.kind == "f" else v.astype("int32")
        k, size = flat(name, idx), dtype.itemsize      # packed arrays hold 1- or 2-byte elements
        per = 4 // size
        word = holders[name][k // per].astype("int32")
        v = (word >> ((k % per) * 8 * size)) & ((1 << (8 * size)) - 1)
        if dtype == np.float16:
            return _half_to_float(v)
        return (v ^ 0x80) - 0x80 if dtype == np.int8 else v

    return load


def decode_func(scheme, shape: tuple, arrays: dict[str, np.ndarray], words: bool = False):
    """A PrimFunc (inputs: the packed arrays in `arrays` order; output: the float32 weight of `shape`).
    `words`: the inputs are the arrays' as_words() forms."""
    from tvm import te, tirx

    from edgegen.core.quant import group_size

    def i64(dims):   # Relax's legalized kernels index with int64; FuseTIR needs the buffers to agree
        return [tirx.IntImm("int64", int(d)) for d in dims]

    stored = {k: as_words(a) if words else a for k, a in arrays.items()}
    holders = {k: te.placeholder(i64(a.shape), str(a.dtype), name=k) for k, a in stored.items()}
    load = _loaders(holders, arrays, words)
    rows, width = shape[0], int(np.prod(shape[1:]))

    def byte(k):
        return load("codes", k)

    if scheme.kind == "float16":
        def value(*idx):
            return load("w", *idx)
    elif scheme.kind == "linear" and scheme.group is None:
        def value(*idx):
            r, c = _flat(shape, idx)
            return load("q", r, c).astype("float32") * load("scale", r, 0)
    elif scheme.kind in ("linear", "ternary"):
        group = group_size(scheme, width)
        padded = arrays["scale"].shape[1] * group
        bits, offset = (2, 1) if scheme.kind == "ternary" else (4, 8)

        def value(*idx):
            r, c = _flat(shape, idx)
            code = _code(byte, bits, r * padded + c)
            return (code - offset).astype("float32") * load("scale", r, c // group)
    elif scheme.kind == "palette":
        per_table = rows // arrays["lut"].shape[0]

        def value(*idx):
            r, c = _flat(shape, idx)
            return load("lut", r // per_table, _code(byte, scheme.bits, r * width + c))
    else:
        raise ValueError(f"{scheme.name}: no decode kernel for kind {scheme.kind!r}")
    out = te.compute(i64(shape), value, name="decode")
    return te.create_prim_func([*holders.values(), out]).without_attr("global_symbol")


def take_rows(packed, ids: np.ndarray) -> np.ndarray:
    """The reference of a packed lookup table's fused gather: rows `ids` of the decoded table, the
    indices clamped to the table as the compiled gather clamps them (converters/lower.py)."""
    from edgegen.core.quant import dequantize_weight

    table = dequantize_weight(packed)
    return table[np.clip(np.asarray(ids, np.int64), 0, table.shape[0] - 1)]


def make_fusion_pass():
    """FuseOpsByPattern: decode -> [permute_dims] -> matmul/conv2d [-> add] as one kernel, and decode ->
    take (a lookup table's gather)."""
    from tvm import relax
    from tvm.relax.dpl import GlobalVarPattern, is_op, wildcard
    from tvm.relax.dpl.pattern import _is_call_tir

    def decode():
        return _is_call_tir(GlobalVarPattern(DECODE_PREFIX))

    def with_add(core):
        other = wildcard()
        add = is_op("relax.add")(core, other) | is_op("relax.add")(other, core)
        return add, {"core": core, "other": other}, _addend_independent

    decoded = decode()
    matmul = is_op("relax.matmul")(wildcard(), is_op("relax.permute_dims")(decoded) | decoded)
    conv = is_op("relax.nn.conv2d")(wildcard(), decode())
    take = is_op("relax.take")(decode(), wildcard())        # a packed lookup table: decode the rows read
    patterns = [(PATTERN_NAMES[0], *with_add(matmul)), (PATTERN_NAMES[0], matmul),
                (PATTERN_NAMES[1], *with_add(conv)), (PATTERN_NAMES[1], conv), (PATTERN_NAMES[2], take)]
    return relax.transform.FuseOpsByPattern(patterns, bind_constants=False, annotate_codegen=False)


def _addend_independent(ctx) -> bool:
    """Whether the add's other operand can be computed before the matmul/conv it would join: not when
    it is read from that op's own output (a residual around a bias-free conv or linear, `y = f(h) + h`
    with h = conv(x)). Fusing then would need the kernel's output as its input; the fused call reads a
    variable bound after it, which Relax's VM codegen reports as "Var lvN is not defined"."""
    from tvm import relax

    core, other = ctx.annotated_expr["core"], ctx.annotated_expr["other"]
    start = ctx.value_to_bound_var.get(core)
    target = other if isinstance(other, relax.Var) else ctx.value_to_bound_var.get(other)
    if target is None and not isinstance(other, relax.Var):
        return True                       # a constant: nothing computes it
    if start is None or target is None:
        return False                      # not traceable: keep the add apart, the op still fuses alone
    seen, todo = set(), [start]
    while todo:
        var = todo.pop()
        for user in ctx.var_usages.get(var, []):
            if user.same_as(target):
                return False
            if user not in seen:
                seen.add(user)
                todo.append(user)
    return True
