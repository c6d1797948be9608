"""DecomposeGelu + fast math, compiled for the CPU, against the numpy references."""

import numpy as np
import pytest

pytestmark = pytest.mark.tvm


def test_gelu_variants_match_reference():
    import tvm
    from tvm import relax

    from edgegen.converters.lower import compile_module
    from edgegen.kernels import gelu

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((4, 256), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            a = bb.emit(relax.op.nn.gelu_tanh(x))
            b = bb.emit(relax.op.nn.gelu(x))
            out = bb.emit_output(relax.Tuple([a, b]))
        bb.emit_func_output(out)
    mod = bb.get()
    rewritten = gelu.make_pass()(mod)
    text = rewritten["main"].script()
    assert "gelu" not in text and "R.tanh" in text and "R.erf" in text

    data = np.linspace(-6, 6, 1024, dtype=np.float32).reshape(4, 256)
    vm = relax.VirtualMachine(compile_module(mod, {"kind": "llvm"}), tvm.cpu())
    got_tanh, got_erf = vm["main"](tvm.runtime.tensor(data))
    np.testing.assert_allclose(got_tanh.numpy(), gelu.gelu_tanh(data.astype(np.float64)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_erf.numpy(), gelu.gelu(data.astype(np.float64)), rtol=1e-5, atol=1e-5)
