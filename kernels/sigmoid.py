"""Pass `DecomposeSigmoid`: write nn.silu and sigmoid as x·σ(x) and σ(x) = 1 / (1 + exp(-x)), so
that FastMathTransform gives them its vectorizable exp. TVM's own sigmoid becomes libm's expf,
one scalar call per element: a UNet's SiLUs (after every GroupNorm, in every resnet block) ran
at scalar speed. Numpy references: `sigmoid`, `silu`."""

from __future__ import annotations

import numpy as np


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def silu(x: np.ndarray) -> np.ndarray:
    return x * sigmoid(x)


def make_pass():
    import tvm
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    from .relax_util import function_pass

    @mutator
    class _Rewrite(PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            if not isinstance(call.op, tvm.ir.Op) or call.op.name not in ("relax.nn.silu", "relax.sigmoid"):
                return call
            x = call.args[0]
            if not str(x.ty.dtype).startswith("float"):
                return call
            one = relax.const(1.0, x.ty.dtype)
            s = relax.op.divide(one, relax.op.add(one, relax.op.exp(relax.op.negative(x))))
            return relax.op.multiply(x, s) if call.op.name == "relax.nn.silu" else s

    return function_pass(_Rewrite, "DecomposeSigmoid")
