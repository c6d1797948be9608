"""The input statistics of each matmul/conv layer on calibration inputs, for the calibrated quantizers.

The captured torch module is run on the calibration inputs with a forward hook on every Linear and
Conv2d whose weight the lowered component holds; each hook accumulates E[x x^T] of its input along
the weight's reduction axis (a conv's through F.unfold, the im2col view, in the weight's
[in, kh, kw] order). edgegen.core.quant's methods weigh their rounding by it.
"""

from __future__ import annotations

import numpy as np

from edgegen.core.quant import HESSIAN_MAX_WIDTH, LayerStats

# rows (tokens, output pixels) each call contributes at most, picked evenly: enough for a K x K moment
# estimate, and a large feature map costs no more than a small one
MAX_ROWS_PER_CALL = 4096


def _rows(module, x):
    """The layer input `x` as [rows, reduction], or None for a layer these statistics do not describe."""
    import torch

    if isinstance(module, torch.nn.Linear):
        return x.reshape(-1, x.shape[-1])
    if module.groups != 1 or isinstance(module.padding, str) or module.padding_mode != "zeros":
        return None      # a grouped conv's filters read different channels; a string padding has no unfold
    cols = torch.nn.functional.unfold(x, module.kernel_size, module.dilation, module.padding, module.stride)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def collect(module, sources: dict[str, str], samples: list[dict]) -> dict[str, LayerStats]:
    """{lowered weight name: LayerStats} for the Linear/Conv2d layers of `module` (the captured wrapper)
    that `sources` (lowered weight name -> torch parameter name) names, over `samples` (inputs in the
    wrapper's order)."""
    import torch

    by_param = {fqn: name for name, fqn in sources.items()}
    sums: dict[str, list] = {}
    hooks = []

    def hook_for(name: str):
        def hook(mod, args):
            rows = _rows(mod, args[0].detach())
            if rows is None:
                return
            if len(rows) > MAX_ROWS_PER_CALL:
                rows = rows[torch.linspace(0, len(rows) - 1, MAX_ROWS_PER_CALL).long()]
            x = rows.double()
            entry = sums.setdefault(name, [0, 0.0, 0.0])
            entry[0] += len(x)
            entry[1] = entry[1] + (x * x).sum(0)
            if x.shape[1] <= HESSIAN_MAX_WIDTH:
                entry[2] = entry[2] + x.T @ x
        return hook

    for path, sub in module.named_modules():
        if isinstance(sub, (torch.nn.Linear, torch.nn.Conv2d)) and f"{path}.weight" in by_param:
            hooks.append(sub.register_forward_pre_hook(hook_for(by_param[f"{path}.weight"])))
    try:
        with torch.no_grad():
            for sample in samples:
                module(*(torch.from_numpy(np.ascontiguousarray(a)) for a in sample.values()))
    finally:
        for h in hooks:
            h.remove()
    return {name: LayerStats((s1 / n).numpy(), None if isinstance(s2, float) else (s2 / n).numpy())
            for name, (n, s1, s2) in sums.items()}
