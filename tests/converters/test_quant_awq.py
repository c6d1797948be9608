"""AWQ's input-channel scales in a compiled graph: folded into the LayerNorm/GroupNorm affine that feeds a
layer, an explicit multiply elsewhere; the manifest records where, and the packed build still
reproduces torch."""

import numpy as np
import pytest

from edgegen.core.metrics import psnr
from edgegen.core.quant import parse

pytestmark = [pytest.mark.tvm, pytest.mark.torch]
TARGET = {"kind": "llvm"}


def _model():
    """Channels of very different magnitudes (as real activations have) after a LayerNorm, a GroupNorm, and
    two activations: what AWQ's scales weigh."""
    import torch

    torch.manual_seed(0)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.l0, self.norm, self.l1 = torch.nn.Linear(16, 64), torch.nn.LayerNorm(64), torch.nn.Linear(64, 64)
            self.l2, self.l3 = torch.nn.Linear(64, 64), torch.nn.Linear(64, 16)
            self.c0, self.gn = torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.GroupNorm(4, 32)
            self.c1, self.c2 = torch.nn.Conv2d(32, 32, 3, padding=1), torch.nn.Conv2d(32, 32, 3, padding=1)
            self.c3 = torch.nn.Conv2d(32, 3, 1)
            with torch.no_grad():
                for param in (self.norm.weight, self.gn.weight, self.l1.weight, self.c1.weight):
                    shape = (-1,) + (1,) * (param.ndim - 1)
                    param.mul_(torch.exp(1.5 * torch.randn(param.shape[0])).reshape(shape))

        def forward(self, tokens, image):
            h = self.l2(torch.nn.functional.gelu(self.l1(self.norm(self.l0(tokens)))))
            g = self.c2(torch.nn.functional.silu(self.c1(self.gn(self.c0(image)))))
            return self.l3(h), self.c3(g)

    rng = np.random.default_rng(0)
    return Net(), {"tokens": rng.standard_normal((2, 24, 16)).astype(np.float32),
                   "image": rng.standard_normal((1, 3, 12, 12)).astype(np.float32)}


def test_awq_scales_fold_into_norms_or_multiply_and_the_build_holds():
    import tvm
    from tvm import relax

    from edgegen.converters import capture, layer_stats, lower, quantize
    from edgegen.converters.module import capture_module

    cap = capture_module(*_model())
    lowered = lower.to_relax(capture.export(cap), len(cap.inputs), "awq")
    reference = capture.run_torch(cap)
    stats = layer_stats.collect(cap.module, lowered.sources, [cap.inputs])
    packed, info = quantize.apply(lowered, parse("w4g128"), TARGET, calibration=[cap.inputs], stats=stats)
    placed = {lay["weight"]: lay.get("input_scale") for lay in info["layers"] if lay["scheme"] != "fp32"}
    where = " | ".join(p for p in placed.values() if p)
    assert "folded into LayerNorm" in where and "folded into GroupNorm" in where and "explicit" in where, placed
    assert all(lay["method"].endswith("+awq") == bool(lay.get("input_scale"))
               for lay in info["layers"] if lay["scheme"] != "fp32")
    vm = relax.VirtualMachine(lower.compile_module(packed.module, TARGET), tvm.cpu())
    out = vm["main"](*(tvm.runtime.tensor(a) for a in cap.inputs.values()),
                     *(tvm.runtime.tensor(packed.weights[s.name]) for s in packed.weight_specs))
    for name, got in zip(reference, out):
        assert psnr(reference[name], got.numpy()) >= 25, name     # int4 weights: a misplaced scale would be noise
