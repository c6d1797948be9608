"""Every scheme over a zoo of small architectures (edgegen.testing.zoo): each graph whose float32
build compiles also compiles quantized, reproduces torch above the quantized gate on every
architecture's output, and packs layers of every architecture. The architectures are built as one
module (edgegen.testing.zoo.combined), captured once; the builds stay in memory."""

import numpy as np
import pytest

from edgegen.core.metrics import psnr
from edgegen.core.quant import QUANT_FLOOR_DB, SCHEMES, parse
from edgegen.testing.zoo import ZOO

pytestmark = [pytest.mark.tvm, pytest.mark.torch, pytest.mark.slow]
TARGET = {"kind": "llvm"}
_captured: dict = {}


def _zoo():
    """(lowered float32 module, example inputs, torch's outputs by architecture), once."""
    if not _captured:
        from edgegen.converters import capture, lower
        from edgegen.converters.module import capture_module
        from edgegen.testing.zoo import combined

        cap = capture_module(*combined())
        lowered = lower.to_relax(capture.export(cap), len(cap.inputs), "zoo")
        _captured.update(lowered=lowered, inputs=cap.inputs, reference=capture.run_torch(cap))
    return _captured["lowered"], _captured["inputs"], _captured["reference"]


def _run(lowered, inputs: dict) -> list[np.ndarray]:
    import tvm
    from tvm import relax

    from edgegen.converters import lower

    vm = relax.VirtualMachine(lower.compile_module(lowered.module, TARGET), tvm.cpu())
    out = vm["main"](*(tvm.runtime.tensor(a) for a in inputs.values()),
                     *(tvm.runtime.tensor(lowered.weights[s.name]) for s in lowered.weight_specs))
    return [o.numpy() for o in ([out] if hasattr(out, "numpy") else out)]


@pytest.mark.parametrize("scheme", [None, *(s for s in SCHEMES if not s.endswith("-rtn")), "w4g32-rtn", "mixed:30"])
def test_every_scheme_compiles_and_holds_its_gate_on_every_architecture(scheme):
    from edgegen.converters import quantize

    lowered, inputs, reference = _zoo()
    if scheme is not None:
        lowered, info = quantize.apply(lowered, parse(scheme), TARGET, calibration=[inputs])
    got = {arch: psnr(reference[arch], out) for arch, out in zip(reference, _run(lowered, inputs))}
    gate = 40 if scheme is None else QUANT_FLOOR_DB     # build's gates: fp32 parity, quantized floor
    assert all(db >= gate for db in got.values()), (scheme, got)
    if scheme is None:
        return
    chosen = [lay for lay in info["layers"] if lay["scheme"] != "fp32"]
    assert all(lay["reason"] for lay in info["layers"] if lay["scheme"] == "fp32")
    if scheme.startswith("mixed"):
        assert info["calibration_psnr_db"] >= 30, info
        return
    # every architecture has a layer packed (weight names start with the architecture's module name)
    assert {arch for arch in ZOO if any(f"parts_{arch}_" in lay["weight"] for lay in chosen)} == set(ZOO), chosen
    if scheme != "fp16":
        assert all(lay["bits_per_weight"] < 16 for lay in chosen), chosen
