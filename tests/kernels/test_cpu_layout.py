"""The CPU target's build-time weight transforms: linear weights stored transposed
(kernels/weight_layout.py) and 3x3 convolutions in Winograd F(4x4, 3x3) (kernels/cpu_winograd.py),
each against its numpy reference and, compiled, against torch."""

import numpy as np
import pytest

from test_cpu_loops import _conv2d_nchw

pytestmark = pytest.mark.tvm


@pytest.mark.parametrize("shape,k,pad", [((2, 8, 13, 10), 5, 1), ((1, 4, 8, 8), 3, 0), ((1, 3, 9, 7), 2, 1),
                                         ((1, 2, 4, 4), 2, 1)])
def test_winograd_reference_matches_direct_convolution(shape, k, pad):
    from edgegen.kernels import cpu_winograd

    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    w = rng.standard_normal((k, shape[1], 3, 3))
    out = cpu_winograd.winograd_conv2d(x, cpu_winograd.transform_weight(w), (pad, pad))
    np.testing.assert_allclose(out, _conv2d_nchw(x, w, pad), rtol=1e-9, atol=1e-9)


def _net():
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(24, 40)
            self.conv = torch.nn.Conv2d(40, 32, 3, padding=1)       # Winograd
            self.few = torch.nn.Conv2d(32, 8, 3, padding=1)         # few channels: direct
            self.shared = torch.nn.Linear(40, 40)

        def forward(self, x):                                       # x (1, 64, 24)
            h = self.proj(x).transpose(1, 2).reshape(1, 40, 8, 8)
            h = torch.nn.functional.silu(self.conv(h))
            y = self.few(h).reshape(1, 8, 64).mean(1)
            s = self.shared(self.shared(x.new_ones(1, 40)))          # one weight read by two matmuls
            return y + s[:, :1]

    torch.manual_seed(0)
    return Net().eval()


def test_build_time_layouts_match_torch_and_record_decisions():
    import torch
    import tvm
    from tvm import relax

    from edgegen.converters import lower
    from edgegen.core.metrics import psnr
    from edgegen.kernels import weight_layout, cpu_winograd

    net = _net()
    x = torch.randn(1, 64, 24)
    with torch.no_grad():
        expected = net(x).numpy()
    lowered = lower.to_relax(torch.export.export(net, (x,)), 1, "net")
    before = dict(lowered.weights)
    decisions: list = []
    packed = lower.cpu_weight_layouts(lowered, decisions)
    by_weight = {d["weight"]: d for d in decisions}
    proj, conv, few, shared = (next(n for n in before if n.startswith(f"p_{m}_weight"))
                               for m in ("proj", "conv", "few", "shared"))
    assert by_weight[proj]["layout"] == "transposed (K, N)"
    assert "shared" in by_weight[shared]["reason"] and shared in packed.weights
    assert by_weight[conv]["kernel"] == "winograd F(4x4,3x3)"
    assert by_weight[few]["kernel"] == "direct" and "channels" in by_weight[few]["reason"]
    np.testing.assert_array_equal(packed.weights[f"{proj}.t"], weight_layout.transpose_weight(before[proj]))
    np.testing.assert_array_equal(packed.weights[f"{conv}.winograd4"], cpu_winograd.transform_weight(before[conv]))
    assert proj not in packed.weights and conv not in packed.weights and few in packed.weights
    assert [s.name for s in packed.weight_specs] == [p.name for p in packed.module["main"].params[1:]]
    assert packed.sources[f"{conv}.winograd4"] == lowered.sources[conv]

    kernels: list = []
    executable = lower.compile_module(packed.module, lower.resolve_target({"kind": "llvm", "mcpu": "host"}), kernels)
    names = [k["kernel"] for k in kernels]
    transposes = [k for k in kernels if k["kernel"].startswith("transpose")]
    assert transposes and all(k["arg_shapes"] == [[40, 40]] for k in transposes), transposes   # the shared one only
    assert any(cpu_winograd.PREFIX in n for n in names), names
    vm = relax.VirtualMachine(executable, tvm.cpu())
    args = [tvm.runtime.tensor(x.numpy())] + [tvm.runtime.tensor(packed.weights[s.name])
                                              for s in packed.weight_specs]
    assert psnr(expected, vm["main"](*args).numpy()) > 90


def test_winograd_kernels_match_reference_at_odd_sizes():
    """The gather/scatter kernels at a size that leaves partial tiles (13x10 -> 4x3 tiles, cropped)."""
    import tvm
    from tvm import relax

    from edgegen.converters import lower
    from edgegen.kernels import cpu_winograd

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((2, 32, 13, 10), "float32"))
    w = relax.Var("w", relax.TensorType((40, 32, 3, 3), "float32"))
    with bb.function("main", [x, w], attrs={"num_input": 1}):
        with bb.dataflow():
            out = bb.emit_output(relax.op.nn.conv2d(x, w, padding=1))
        bb.emit_func_output(out)
    rng = np.random.default_rng(1)
    xs = rng.standard_normal((2, 32, 13, 10), dtype=np.float32)
    ws = rng.standard_normal((40, 32, 3, 3), dtype=np.float32)
    lowered = lower.Lowered(bb.get(), [], {"w": ws})
    from edgegen.core.specs import TensorSpec

    lowered.weight_specs.append(TensorSpec.of("w", ws))
    decisions: list = []
    packed = lower.cpu_weight_layouts(lowered, decisions)
    assert [d["kernel"] for d in decisions] == ["winograd F(4x4,3x3)"]
    vm = relax.VirtualMachine(lower.compile_module(packed.module, {"kind": "llvm"}), tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(xs), tvm.runtime.tensor(packed.weights["w.winograd4"])).numpy()
    reference = cpu_winograd.winograd_conv2d(xs.astype(np.float64), packed.weights["w.winograd4"], (1, 1))
    np.testing.assert_allclose(out, reference, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(out, _conv2d_nchw(xs.astype(np.float64), ws.astype(np.float64), 1), rtol=1e-4,
                               atol=1e-3)


def test_winograd_leaves_large_weights_direct():
    """U is 4x the weight: an SD UNet's 320-channel convolutions at 64x64 take Winograd, its 640- and
    1280-channel ones (weights over MAX_WEIGHT_VALUES) stay direct, which keeps the artifact's size."""
    from tvm import relax

    from edgegen.kernels import cpu_winograd

    def choose(k, c, side):
        x = relax.Var("x", relax.TensorType((2, c, side, side), "float32"))
        w = relax.Var("w", relax.TensorType((k, c, 3, 3), "float32"))
        return cpu_winograd.choose([k, c, 3, 3], [2, c, side, side], relax.op.nn.conv2d(x, w, padding=1).attrs)

    assert choose(320, 320, 64)[0]
    ok, reason = choose(1280, 1280, 8)
    assert not ok and "14745600 weight values" in reason
    assert not choose(640, 640, 32)[0]
