"""fp16 arithmetic: a kernel whose global buffers are already float16 (converters/half_storage.py)
computes in float16 too, except where float16 loses the answer.

The rewrite runs on a kernel's final device code. Every float value gets a kind: float16 (a load from a
float16 buffer, and what is computed from float16 values and constants alone) or float32 (what meets a
float32 value). Local and shared buffers become float16, except those that stay float32, found by a
fixed point:
- an accumulator (a buffer a store reads while writing it): the sums of GEMMs and convolutions,
  GroupNorm's sum and sum of squares, the softmax's running maximum and sum, the attention scores;
- a buffer a float32 value is stored into (e.g. GroupNorm's statistics, read back from an accumulator).
So GEMM and attention tiles and operands are float16 in local memory and registers, summed in float32;
elementwise kernels compute in float16; what follows a float32 statistic (the normalisation after
GroupNorm's mean and variance, the softmax's exponentials) stays float32. Launches, grids and buffers
are the fp16-storage kernel's, so both variants run from one plan.
"""

from __future__ import annotations

from .half_storage import rebuild

F16, F32, CONST = "float16", "float32", "const"
# a float32 constant that float16 cannot hold (TVM's -FLT_MAX sentinel of a maximum) becomes its end
_HALF_MAX = 65504.0
KEPT_FP32 = ("accumulators (GEMM and convolution sums, GroupNorm statistics, the softmax maximum and sum, "
             "attention scores) and what is computed from them")


def _base(dtype) -> str:
    return str(dtype).split("x")[0]


def _with_base(dtype, base: str) -> str:
    text = str(dtype)
    return base + text[len(_base(text)):]


class _Retyper:
    def __init__(self, local_floats: set, kept: set):
        self.local_floats = local_floats    # the float32 local and shared buffers the kernel allocates
        self.kept = kept                    # those that stay float32
        self.buffers: dict = {}             # buffer -> its float16 replacement
        self.vars: dict = {}                # Bind var -> its retyped replacement
        self.restored: list = []            # casts back to a statement's original dtype (see held)

    # ---- kinds, without building (the fixed point's view) ----
    def buffer_kind(self, buffer) -> str | None:
        base = _base(buffer.dtype)
        if base == F32 and buffer in self.local_floats:
            return F32 if buffer in self.kept else F16
        return base if base in (F16, F32) else None

    # ---- building ----
    def half_buffer(self, buffer):
        from tvm import tirx

        if self.buffer_kind(buffer) != F16 or _base(buffer.dtype) == F16:
            return buffer
        if buffer not in self.buffers:
            self.buffers[buffer] = tirx.decl_buffer(buffer.shape, _with_base(buffer.dtype, F16), buffer.name,
                                                    scope=buffer.scope())
        return self.buffers[buffer]

    def expr(self, e):
        """(the expression rebuilt, its kind: F16, F32, CONST or None for non-float values)."""
        from tvm import ir, tirx

        kind = _base(e.ty.dtype) if hasattr(e, "ty") and hasattr(e.ty, "dtype") else None
        cls = type(e).__name__
        if isinstance(e, tirx.FloatImm):
            return e, CONST if kind == F32 else kind
        if isinstance(e, tirx.IntImm) or cls in ("Op", "StringImm"):
            return e, None
        if isinstance(e, tirx.Var):
            new = self.vars.get(e, e)
            return new, _kind_of(new)
        if cls == "TensorLoad":
            buffer = self.half_buffer(e.source)
            indices = [self.expr(i)[0] for i in e.indices]
            load = tirx.BufferLoad(buffer, indices)
            return load, _kind_of(load)
        if isinstance(e, tirx.Cast):
            value, k = self.expr(e.value)
            to = _base(e.ty.dtype)
            if to in (F16, F32) and k in (F16, F32, CONST):     # float to float: the kinds decide
                return (value, k) if to == F32 else (self.as_kind(value, k, F16), F16)
            return tirx.Cast(str(e.ty.dtype), value), kind
        if cls in _ARITH or cls in _COMPARE:
            (a, ka), (b, kb) = self.expr(e.a), self.expr(e.b)
            k = _join(ka, kb)
            a, b = self.as_kind(a, ka, k), self.as_kind(b, kb, k)
            return getattr(tirx, cls)(a, b), (k if cls in _ARITH else None)
        if isinstance(e, tirx.Select):
            cond = self.expr(e.condition)[0]
            (t, kt), (f, kf) = self.expr(e.true_value), self.expr(e.false_value)
            k = _join(kt, kf)
            return tirx.Select(cond, self.as_kind(t, kt, k), self.as_kind(f, kf, k)), k
        if isinstance(e, tirx.Broadcast):
            value, k = self.expr(e.value)
            return tirx.Broadcast(value, e.lanes), k
        if isinstance(e, ir.expr.Call):
            return self.call(e, kind)
        if isinstance(e, tirx.Ramp):
            return e, None
        if isinstance(e, tirx.Not):
            return tirx.Not(self.expr(e.a)[0]), None
        if cls in _INTEGER:
            return getattr(tirx, cls)(self.expr(e.a)[0], self.expr(e.b)[0]), None
        if cls == "BitwiseNot":
            return tirx.BitwiseNot(self.expr(e.a)[0]), None
        if cls in ("And", "Or"):
            return getattr(tirx, cls)(self.expr(e.a)[0], self.expr(e.b)[0]), None
        if isinstance(e, tirx.Shuffle):
            vectors = [self.expr(v) for v in e.vectors]
            k = CONST
            for _, kv in vectors:
                k = _join(k, kv)
            return tirx.Shuffle([self.as_kind(v, kv, k) for v, kv in vectors], e.indices), k
        raise NotImplementedError(f"fp16 arithmetic: no rule for {cls} ({e})")

    def call(self, e, kind):
        from tvm import ir

        args = [self.expr(a) for a in e.args]
        name = getattr(e.op, "name", "")
        floating = kind in (F16, F32) and name not in _BIT_CALLS
        k = F32
        if floating:
            k = CONST
            for _, ka in args:
                k = _join(k, ka)
            if k == CONST:
                k = F32
        new_args = [self.as_kind(a, ka, k) if floating and ka in (F16, F32, CONST) else
                    self.as_kind(a, ka, F32) if ka == F16 else a for a, ka in args]
        ret = _with_base(e.ty.dtype, k) if floating else e.ty
        return ir.expr.Call(e.op, new_args, ret_ty=ret), (k if floating else kind)

    def as_kind(self, e, k, want):
        """`e` (of kind k) as a value of kind `want`."""
        from tvm import tirx

        if k is None or want is None or k == want or want == CONST or _kind_of(e) == want:
            return e
        if isinstance(e, tirx.FloatImm) and want == F16:
            v = e.value
            v = v if v != v or abs(v) == float("inf") else max(-_HALF_MAX, min(_HALF_MAX, v))
            return tirx.FloatImm(F16, v)
        return tirx.Cast(_with_base(e.ty.dtype, want), e)

    def held(self, e):
        """`e` rebuilt, as a value of its original dtype: a statement is rebuilt around its new
        expressions before `stmt` retypes it, and TVM checks a store's dtype as it is built."""
        from tvm import tirx

        new, k = self.expr(e)
        if k == CONST or _kind_of(new) == _kind_of(e):
            return new
        self.restored.append(tirx.Cast(str(e.ty.dtype), new))
        return self.restored[-1]

    def unheld(self, e):
        return e.value if any(e.same_as(r) for r in self.restored) else e

    def stmt(self, node):
        """The replacement of a statement whose expressions were rebuilt (see held), or None."""
        from tvm import tirx

        if isinstance(node, tirx.BufferStore):
            buffer = self.half_buffer(node.buffer)
            value = self.unheld(node.value)
            k = _kind_of(value)
            want = _base(buffer.dtype)
            if want in (F16, F32) and k in (F16, F32):
                value = self.as_kind(value, k, want)
            return tirx.BufferStore(buffer, value, node.indices)
        if type(node).__name__ == "AllocBuffer":
            new = self.half_buffer(node.buffer)
            return None if new is node.buffer else tirx.AllocBuffer(new, annotations=node.annotations)
        if isinstance(node, tirx.Bind):
            return self.bind(node.var, self.unheld(node.value))
        return None

    def bind(self, var, value):
        """Bind `var` to the rebuilt `value`: under a new variable where its kind changed (then the
        new Bind), else None."""
        from tvm import tirx

        if _kind_of(value) not in (F16, F32) or _kind_of(value) == _kind_of(var):
            return None
        self.vars[var] = tirx.Var(var.name, str(value.ty.dtype))
        return tirx.Bind(self.vars[var], value)


_ARITH = ("Add", "Sub", "Mul", "Div", "Min", "Max", "FloorDiv", "FloorMod", "Mod")
_COMPARE = ("EQ", "NE", "LT", "LE", "GT", "GE")
_INTEGER = ("LShift", "RShift", "BitwiseAnd", "BitwiseOr", "BitwiseXor")
# calls whose float result is not arithmetic on their arguments: bits seen as a float
_BIT_CALLS = ("tirx.reinterpret",)


def _kind_of(e) -> str | None:
    dtype = getattr(getattr(e, "ty", None), "dtype", None)
    base = _base(dtype) if dtype is not None else None
    return base if base in (F16, F32) else None


def _join(a, b):
    kinds = {a, b} - {None}
    if F32 in kinds:
        return F32
    if F16 in kinds:
        return F16
    return CONST if CONST in kinds else None


def rewrite_kernel(func):
    from tvm import tirx

    local_floats: set = set()

    def collect(node):
        if type(node).__name__ == "AllocBuffer" and _base(node.buffer.dtype) == F32:
            local_floats.add(node.buffer)

    rebuild(func.body, collect)
    kept = _kept_float32(func, local_floats) if local_floats else set()
    retyper = _Retyper(local_floats, kept)
    body = rebuild(func.body, retyper.stmt, exprs=retyper.held)
    return tirx.PrimFunc(func.params, body, func.ret_type, func.attrs)


def _kept_float32(func, local_floats: set) -> set:
    """The local buffers that stay float32: accumulators, and those a float32 value is stored into,
    to a fixed point."""
    from tvm import tirx

    kept: set = set()
    while True:
        retyper = _Retyper(local_floats, set(kept))
        grown = set(kept)

        def visit(node):
            if isinstance(node, tirx.BufferStore) and node.buffer in local_floats:
                if node.buffer in grown:
                    return
                if _reads(node.value, node.buffer) or retyper.expr(node.value)[1] == F32:
                    grown.add(node.buffer)
            elif isinstance(node, tirx.Bind):
                retyper.bind(node.var, retyper.expr(node.value)[0])

        rebuild(func.body, visit)
        if grown == kept:
            return kept
        kept = grown


def _reads(expr, buffer) -> bool:
    found = []

    def visit(node):
        if type(node).__name__ == "TensorLoad" and node.source.same_as(buffer):
            found.append(node)

    rebuild(expr, visit)
    return bool(found)
