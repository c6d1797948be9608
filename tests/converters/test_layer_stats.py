"""Layer input statistics from torch hooks: the im2col view matches the conv weight's order, so the
quantizers' error model (d H d^T) is the layer output's real error."""

import numpy as np
import pytest

from edgegen.core.quant import layer_error

pytestmark = [pytest.mark.torch]


def test_statistics_predict_each_layers_output_error():
    import torch

    from edgegen.converters.layer_stats import collect

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(5, 8, 3, padding=1, stride=2, bias=False)
    lin = torch.nn.Linear(8, 6, bias=False)
    grouped = torch.nn.Conv2d(8, 8, 3, padding=1, groups=2)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.lin, self.grouped = conv, lin, grouped

        def forward(self, x):
            h = self.conv(x)
            return self.lin(self.grouped(h).permute(0, 2, 3, 1))

    rng = np.random.default_rng(0)
    samples = [{"x": rng.standard_normal((2, 5, 9, 9)).astype(np.float32)} for _ in range(3)]
    stats = collect(Net(), {"c": "conv.weight", "l": "lin.weight", "g": "grouped.weight"}, samples)
    assert set(stats) == {"c", "l"}          # a grouped conv's filters read different inputs: none
    cases = (("c", conv, lambda x: x), ("l", lin, lambda x: grouped(conv(x)).permute(0, 2, 3, 1)))
    for name, module, layer_input in cases:
        w = module.weight.detach().numpy()
        delta = rng.standard_normal(w.shape).astype(np.float32) * 0.01
        with torch.no_grad():
            errs = []
            for s in samples:
                x = layer_input(torch.from_numpy(s["x"]))
                base = module(x)
                module.weight += torch.from_numpy(delta)
                errs.append(((module(x) - base) ** 2).mean(dim=tuple(range(base.ndim - 1)) if name == "l"
                                                           else (0, 2, 3)).numpy())
                module.weight -= torch.from_numpy(delta)
        measured = float(np.mean(errs))       # per output channel, averaged
        rows = w.reshape(w.shape[0], -1)
        predicted = layer_error(rows, rows + delta.reshape(rows.shape), stats[name])
        assert predicted == pytest.approx(measured, rel=1e-4), name


def test_output_gains_predict_each_layers_share_of_the_output_error():
    """mixed:<dB> predicts the module output's error with one layer quantized from that layer's statistics
    and output gain alone (a few backward passes for all layers): it must match the measured error, per
    layer and per scheme, within a few dB (the layers here span 15 dB), through norms, nonlinearities, a residual, and an
    integer input (where no gradient starts at the inputs)."""
    import torch

    from edgegen.converters.layer_stats import collect
    from edgegen.core.quant import dequantize_weight, output_error, parse, quantize_weight

    torch.manual_seed(0)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = torch.nn.Conv2d(4, 32, 3, padding=1)
            self.label = torch.nn.Embedding(10, 32)
            self.norm = torch.nn.GroupNorm(4, 32)
            self.c2 = torch.nn.Conv2d(32, 32, 3, padding=1, bias=False)
            self.l1, self.l2 = torch.nn.Linear(32, 64), torch.nn.Linear(64, 32)
            self.out = torch.nn.Conv2d(32, 3, 1)

        def forward(self, x, label):
            h = self.c1(x) + self.label(label)[:, :, None, None]
            h = self.c2(torch.nn.functional.silu(self.norm(h))).permute(0, 2, 3, 1)
            h = h + self.l2(torch.nn.functional.gelu(self.l1(h)))
            return self.out(h.permute(0, 3, 1, 2))

    net = Net().eval()
    rng = np.random.default_rng(0)
    samples = [{"x": rng.standard_normal((2, 4, 8, 8)).astype(np.float32),
                "label": rng.integers(0, 10, 2).astype(np.int64)} for _ in range(4)]
    names = ("c1", "c2", "l1", "l2", "out")
    stats = collect(net, {n: f"{n}.weight" for n in names}, samples, probes=4)
    assert all(stats[n].gain.shape == (getattr(net, n).weight.shape[0],) for n in names)

    def run():
        with torch.no_grad():
            return [net(*(torch.from_numpy(a) for a in s.values())).numpy() for s in samples]

    reference = run()
    peak = max(float(np.abs(r).max()) for r in reference)
    for name in names:
        weight = getattr(net, name).weight
        w = weight.detach().numpy().copy()
        rows = w.reshape(len(w), -1)
        for scheme in ("w4g32-rtn", "ternary-rtn"):
            back = dequantize_weight(quantize_weight(w, parse(scheme)))
            with torch.no_grad():
                weight.copy_(torch.from_numpy(back))
                measured = np.mean([np.mean(((o - r) / peak) ** 2) for o, r in zip(run(), reference)])
                weight.copy_(torch.from_numpy(w))
            predicted = output_error(rows, back.reshape(rows.shape), stats[name])
            # first order, and an error's positions and channels counted as independent: measured here within 2.8 dB
            assert abs(10 * np.log10(predicted / measured)) < 3.5, (name, scheme, predicted, measured)
