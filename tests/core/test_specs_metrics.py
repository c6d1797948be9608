import numpy as np
import pytest

from edgegen.core import InputError, TensorSpec, psnr
from edgegen.core.metrics import PSNR_CAP_DB
from edgegen.core.specs import check_inputs


def test_spec_check_names_the_problem():
    spec = TensorSpec("sample", "float32", (2, 4, 8, 8))
    spec.check(np.zeros((2, 4, 8, 8), np.float32), "unet")
    with pytest.raises(InputError, match=r"'sample' must be float32 with shape \[2, 4, 8, 8\], got float64"):
        spec.check(np.zeros((2, 4, 8, 8)), "unet")
    with pytest.raises(InputError, match=r"got float32 with shape \[1, 4, 8, 8\]"):
        spec.check(np.zeros((1, 4, 8, 8), np.float32), "unet")


def test_check_inputs_missing_and_extra():
    specs = [TensorSpec("a", "int32", (1,)), TensorSpec("b", "float32", (1,))]
    with pytest.raises(InputError, match=r"missing \['b'\], unexpected \['c'\]"):
        check_inputs(specs, {"a": np.zeros(1, np.int32), "c": 1}, "x")


def test_bad_dtype_rejected():
    with pytest.raises(ValueError, match="dtype"):
        TensorSpec("x", "complex64", (1,))


def test_psnr():
    ref = np.linspace(-1, 1, 100)
    assert psnr(ref, ref) == PSNR_CAP_DB
    noisy = ref + 0.01
    assert psnr(ref, noisy) == pytest.approx(40.0, abs=1e-6)  # peak 1, mse 1e-4
    assert psnr(ref, np.full_like(ref, np.nan)) == float("-inf")
