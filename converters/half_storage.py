"""fp16 storage with fp32 arithmetic: every float32 tensor a GPU kernel reads or writes in global
memory is stored as float16, converted on load and store; registers and local memory stay float32,
so GEMM accumulators, GroupNorm statistics and the softmax maximum and sum keep full precision.

The rewrite runs on a kernel's final device code, just before TVM's code generator. OpenCL C reads
and writes `half` without cl_khr_fp16 only through vload_half/vstore_half (core since OpenCL 1.0),
so there the accesses become those calls (vload_halfN for vector accesses); WGSL (`enable f16`,
WebGPU's shader-f16 feature) and Metal get plain float16 buffers with conversions.
"""

from __future__ import annotations

import re

# TVM's OpenCL code generator refuses, with #error, any program naming `half` on a device without
# cl_khr_fp16 or cl_amd_fp16; these programs only pass `half` pointers to vload_half/vstore_half,
# which need neither
_OPENCL_FP16_GUARD = re.compile(r"#ifdef cl_khr_fp16\n.*?#endif\n", re.S)
_OPENCL_FP16_OPTIONAL = "#ifdef cl_khr_fp16\n#pragma OPENCL EXTENSION cl_khr_fp16 : enable\n#endif\n"


def opencl_source(source: str) -> str:
    """An OpenCL program of fp16-storage kernels, compilable without cl_khr_fp16."""
    return _OPENCL_FP16_GUARD.sub(_OPENCL_FP16_OPTIONAL, source)


def rewrite_module(device_mod, language: str, arithmetic: bool = False):
    """`device_mod` (device kernels after TVM's finalize passes) with float32 global buffers stored as
    float16; with `arithmetic`, computing in float16 too (converters/half_arithmetic.py: a device
    with cl_khr_fp16 or shader-f16 reads `half` directly)."""
    import tvm

    from . import half_arithmetic

    out = {}
    for gv, func in device_mod.functions_items():
        if isinstance(func, tvm.tirx.PrimFunc):
            func = rewrite_kernel(func, "native-half" if arithmetic else language)
            func = half_arithmetic.rewrite_kernel(func) if arithmetic else func
        out[gv] = func
    return tvm.IRModule(out, attrs=device_mod.attrs)


def rewrite_kernel(func, language: str):
    from tvm import ir, tirx

    params, halves = [], []          # (old pointer var, new pointer var)
    for p in func.params:
        ann = getattr(p, "ty", None)
        if isinstance(ann, ir.PointerType) and str(getattr(ann.element_type, "dtype", ann.element_type)) == "float32":
            new = tirx.Var(p.name, ir.PointerType(ir.PrimType("float16"), ann.storage_scope))
            halves.append((p, new))
            params.append(new)
        else:
            params.append(p)
    if not halves:
        return func
    buffers: list = []               # (old buffer, new float16 buffer on the new pointer)
    opencl = language == "opencl"

    def half_of(buffer):
        """The float16 buffer standing for `buffer` when a rewritten pointer backs it, else None."""
        return next((new for b, new in buffers if b.same_as(buffer) or b.data.same_as(buffer.data)), None)

    def address(buffer, index):
        """&buffer[first element of index] (a scalar index, or a contiguous vector's base)."""
        base = index.base if isinstance(index, tirx.Ramp) else index
        return tirx.address_of(tirx.BufferLoad(buffer, [base]))

    def strided_lanes(index) -> list:
        return [index.base + index.stride * i for i in range(int(index.lanes))]

    def suffix(dtype) -> str:
        lanes = int(getattr(dtype, "lanes", 1))
        return "" if lanes == 1 else str(lanes)

    def dtype_of(expr):
        return expr.ty.dtype

    def replace(node):
        if isinstance(node, tirx.Var):
            return next((new for old, new in halves if old.same_as(node)), None)
        if isinstance(node, tirx.DeclBuffer):     # `data` binds the buffer to a kernel parameter
            pointer = next((new for old, new in halves if old.same_as(node.data)), None)
            if pointer is None:
                return None
            old = node.buffer
            buffers.append((old, tirx.decl_buffer(old.shape, "float16", old.name)))
            return tirx.DeclBuffer(buffers[-1][1], data=pointer)
        if type(node).__name__ == "TensorLoad":
            new = half_of(node.source)
            if new is None:
                return None
            [index] = node.indices
            if opencl and _strided(index):     # lanes gathered one by one into a vector literal
                lanes = [tirx.call_pure_extern("float32", "vload_half", 0, address(new, i))
                         for i in strided_lanes(index)]
                literal = f"(float{len(lanes)})"
                return tirx.call_pure_extern(str(dtype_of(node)), literal, *lanes)
            if opencl:
                return tirx.call_pure_extern(str(dtype_of(node)), f"vload_half{suffix(dtype_of(node))}", 0,
                                             address(new, index))
            return tirx.Cast(str(dtype_of(node)), tirx.BufferLoad(new, [index]))
        if isinstance(node, tirx.BufferStore):
            new = half_of(node.buffer)
            if new is None:
                return None
            [index], value = node.indices, node.value
            if opencl and _strided(index):     # lanes scattered one by one
                held = tirx.Var("half_store", str(dtype_of(value)))
                return tirx.SeqStmt([tirx.Bind(held, value)] + [
                    tirx.Evaluate(tirx.call_extern("void", "vstore_half", tirx.Shuffle([held], [lane]), 0,
                                                   address(new, i)))
                    for lane, i in enumerate(strided_lanes(index))])
            if opencl:
                return tirx.Evaluate(tirx.call_extern("void", f"vstore_half{suffix(dtype_of(value))}", value, 0,
                                                      address(new, index)))
            return tirx.BufferStore(new, tirx.Cast(str(dtype_of(value)).replace("float32", "float16"), value), [index])
        return None

    return tirx.PrimFunc(params, rebuild(func.body, replace), func.ret_type, func.attrs)


def _strided(index) -> bool:
    from tvm import tirx

    return isinstance(index, tirx.Ramp) and not (isinstance(index.stride, tirx.IntImm) and index.stride.value == 1)


def _fields(node) -> list[str]:
    info, names = type(node).__tvm_ffi_type_info__, []
    while info is not None:
        names = [f.name for f in info.fields] + names
        info = info.parent_type_info
    return [n for n in names if n not in ("span", "ty")]


def rebuild(node, replace, exprs=None):
    """`node` rebuilt bottom-up with replace(n) (a new node, or None to keep n) applied to every
    statement and expression below it; unchanged subtrees are returned as they are. (TVM 0.27 has
    no Python statement mutator; this walks its reflected fields, declaration order first, so a
    buffer declaration is seen before the statements after it.) With `exprs`, each expression a
    statement holds is replaced whole by exprs(expression) instead, and replace sees statements only."""
    import inspect

    from tvm import ir, tirx

    if exprs is not None and isinstance(node, ir.expr.Expr):
        return exprs(node)
    if type(node).__name__ == "Array" or isinstance(node, (list, tuple)):
        items = list(node)
        done = [rebuild(x, replace, exprs) for x in items]
        return done if any(a is not b for a, b in zip(done, items)) else node
    if isinstance(node, (tirx.Var, tirx.DeclBuffer)):    # leaves here: a declaration has no body
        new = replace(node)
        return node if new is None else new
    if not isinstance(node, (tirx.Stmt, ir.expr.Expr)) or isinstance(node, (tirx.IntImm, tirx.FloatImm)):
        return node
    values = {n: getattr(node, n) for n in _fields(node)}
    done = {n: rebuild(v, replace, exprs) for n, v in values.items()}
    if any(done[n] is not values[n] for n in done):
        cls = type(node)
        if cls.__name__ == "TensorLoad":
            node = tirx.BufferLoad(done["source"], done["indices"])
        else:   # what the constructor takes beyond the fields: a call's return type, a cast's dtype
            ty = getattr(node, "ty", None)
            implied = {"ret_ty": ty, "dtype": str(getattr(ty, "dtype", ""))}
            names = list(inspect.signature(cls.__init__).parameters)[1:]
            node = cls(**{n: done[n] if n in done else implied[n] for n in names if n in done or n in implied})
    new = replace(node)
    return node if new is None else new
