"""Dequantizing GEMM and convolution: weights stay packed in memory and are decoded inside the kernel.

`decode_func` writes, for one packed weight (edgegen.core.quant's formats), a TE kernel
`edgegen_decode_*` that turns the stored arrays back into the float32 weight; the numpy
reference is edgegen.core.quant.dequantize_weight. `make_fusion_pass` (pattern name
`edgegen.decode_matmul` / `edgegen.decode_conv2d`) fuses each decode call into the
matmul or conv2d that consumes it, with the bias or residual add that follows, so no
float32 copy of the weight exists between kernels. The CPU schedule rule
(cpu_loops) then computes the decode under the GEMM's parallel loop: each thread
decodes the weight slice its output tile needs into a small buffer.
"""

from __future__ import annotations

import numpy as np

DECODE_PREFIX = "edgegen_decode_"
PATTERN_NAMES = ("edgegen.decode_matmul", "edgegen.decode_conv2d")


def _flat(shape: tuple, idx) -> tuple:
    """(row, column) of weight element `idx` seen as [shape[0], prod(shape[1:])]."""
    col = 0
    for d, i in zip(shape[1:], idx[1:]):
        col = col * d + i
    return idx[0], col


def _code(codes, bits: int, i):
    """The `bits`-wide unsigned code number `i` of a packed uint8 buffer (edgegen.core.quant._pack)."""
    if bits == 6:   # 4 codes in 3 bytes, little-end first
        word, j = i // 4, i % 4
        b = [codes[word * 3 + k].astype("int32") for k in range(3)]
        return ((b[0] | (b[1] << 8) | (b[2] << 16)) >> (6 * j)) & 0x3F
    per = 8 // bits
    return (codes[i // per].astype("int32") >> (bits * (i % per))) & ((1 << bits) - 1)


def decode_func(scheme, shape: tuple, arrays: dict[str, np.ndarray]):
    """A PrimFunc (inputs: the packed arrays in `arrays` order; output: the float32 weight of `shape`)."""
    from tvm import te, tirx

    from edgegen.core.quant import group_size

    def i64(dims):   # Relax's legalized kernels index with int64; FuseTIR needs the buffers to agree
        return [tirx.IntImm("int64", int(d)) for d in dims]

    holders = {k: te.placeholder(i64(a.shape), str(a.dtype), name=k) for k, a in arrays.items()}
    rows, width = shape[0], int(np.prod(shape[1:]))

    if scheme.kind == "float16":
        def value(*idx):
            return holders["w"][idx].astype("float32")
    elif scheme.kind == "linear" and scheme.group is None:
        q, scale = holders["q"], holders["scale"]

        def value(*idx):
            r, c = _flat(shape, idx)
            return q[r, c].astype("float32") * scale[r, 0].astype("float32")
    elif scheme.kind in ("linear", "ternary"):
        codes, scale = holders["codes"], holders["scale"]
        group = group_size(scheme, width)
        padded = arrays["scale"].shape[1] * group
        bits, offset = (2, 1) if scheme.kind == "ternary" else (4, 8)

        def value(*idx):
            r, c = _flat(shape, idx)
            code = _code(codes, bits, r * padded + c)
            return (code - offset).astype("float32") * scale[r, c // group].astype("float32")
    elif scheme.kind == "palette":
        codes, lut = holders["codes"], holders["lut"]
        per_table = rows // arrays["lut"].shape[0]

        def value(*idx):
            r, c = _flat(shape, idx)
            return lut[r // per_table, _code(codes, scheme.bits, r * width + c)].astype("float32")
    else:
        raise ValueError(f"{scheme.name}: no decode kernel for kind {scheme.kind!r}")
    out = te.compute(i64(shape), value, name="decode")
    return te.create_prim_func([*holders.values(), out]).without_attr("global_symbol")


def make_fusion_pass():
    """FuseOpsByPattern: decode -> [permute_dims] -> matmul/conv2d [-> add] as one kernel."""
    from tvm import relax
    from tvm.relax.dpl import GlobalVarPattern, is_op, wildcard
    from tvm.relax.dpl.pattern import _is_call_tir

    def decode():
        return _is_call_tir(GlobalVarPattern(DECODE_PREFIX))

    def with_add(core):
        return is_op("relax.add")(core, wildcard()) | is_op("relax.add")(wildcard(), core)

    decoded = decode()
    matmul = is_op("relax.matmul")(wildcard(), is_op("relax.permute_dims")(decoded) | decoded)
    conv = is_op("relax.nn.conv2d")(wildcard(), decode())
    patterns = [(PATTERN_NAMES[0], with_add(matmul)), (PATTERN_NAMES[0], matmul),
                (PATTERN_NAMES[1], with_add(conv)), (PATTERN_NAMES[1], conv)]
    return relax.transform.FuseOpsByPattern(patterns, bind_constants=False, annotate_codegen=False)
