"""Pass `DecomposeGelu`: write nn.gelu_tanh and nn.gelu as the elementwise formulas they
stand for, so that FastMathTransform can give them vectorizable tanh/erf and FuseOps can
fold them into the GEMM epilogue. Numpy references: `gelu_tanh`, `gelu`."""

from __future__ import annotations

import math

import numpy as np


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def gelu(x: np.ndarray) -> np.ndarray:
    from math import erf

    return 0.5 * x * (1 + np.vectorize(erf)(x / math.sqrt(2)))


def make_pass():
    import tvm
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    from .relax_util import function_pass

    @mutator
    class _Rewrite(PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            if not isinstance(call.op, tvm.ir.Op) or call.op.name not in ("relax.nn.gelu_tanh", "relax.nn.gelu"):
                return call
            x = call.args[0]
            dtype = x.ty.dtype

            def c(v):
                return relax.const(v, dtype)

            if call.op.name == "relax.nn.gelu_tanh":
                inner = relax.op.multiply(c(math.sqrt(2 / math.pi)),
                                          relax.op.add(x, relax.op.multiply(c(0.044715),
                                                                            relax.op.multiply(x, relax.op.multiply(x, x)))))
                return relax.op.multiply(relax.op.multiply(c(0.5), x), relax.op.add(c(1.0), relax.op.tanh(inner)))
            return relax.op.multiply(relax.op.multiply(c(0.5), x),
                                     relax.op.add(c(1.0), relax.op.erf(relax.op.multiply(x, c(1 / math.sqrt(2))))))

    return function_pass(_Rewrite, "DecomposeGelu")
