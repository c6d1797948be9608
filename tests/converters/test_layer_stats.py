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
