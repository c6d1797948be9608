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
# random backward passes per calibration input for the output gains (mixed:<dB> only): the calibration
# inputs already average several, and the estimate's spread falls as 1/sqrt(inputs x probes)
GAIN_PROBES = 2


def probes_for(scheme) -> int:
    """Backward probes per calibration input that `scheme` needs: GAIN_PROBES for mixed:<dB>, else 0."""
    return GAIN_PROBES if scheme is not None and scheme.kind == "mixed" else 0


def _rows(module, x):
    """The layer input `x` as [rows, reduction], or None for a layer these statistics do not describe."""
    import torch

    if isinstance(module, torch.nn.Linear):
        return x.reshape(-1, x.shape[-1])
    if module.groups != 1 or isinstance(module.padding, str) or module.padding_mode != "zeros":
        return None      # a grouped conv's filters read different channels; a string padding has no unfold
    cols = torch.nn.functional.unfold(x, module.kernel_size, module.dilation, module.padding, module.stride)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def collect(module, sources: dict[str, str], samples: list[dict], probes: int = 0) -> dict[str, LayerStats]:
    """{lowered weight name: LayerStats} for the Linear/Conv2d layers of `module` (the captured wrapper)
    that `sources` (lowered weight name -> torch parameter name) names, over `samples` (inputs in the
    wrapper's order). `probes` > 0: also each layer's output gain (LayerStats.gain), from that many
    random backward passes per sample, which `mixed:<dB>` predicts each layer's share of the output
    error with instead of one run per layer."""
    import torch

    by_param = {fqn: name for name, fqn in sources.items()}
    sums: dict[str, list] = {}
    layers = {by_param[f"{path}.weight"]: sub for path, sub in module.named_modules()
              if isinstance(sub, (torch.nn.Linear, torch.nn.Conv2d)) and f"{path}.weight" in by_param}

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

    hooks = [sub.register_forward_pre_hook(hook_for(name)) for name, sub in layers.items()]
    peaks = None
    try:
        with torch.no_grad():
            for sample in samples:
                outs = _outputs(module(*_tensors(sample)))
                got = [float(o.abs().max()) for o in outs]
                peaks = got if peaks is None else [max(a, b) for a, b in zip(peaks, got)]
    finally:
        for h in hooks:
            h.remove()
    stats = {name: LayerStats((s1 / n).numpy(), None if isinstance(s2, float) else (s2 / n).numpy())
             for name, (n, s1, s2) in sums.items()}
    if probes > 0 and samples:
        for name, gain in output_gains(module, {n: layers[n] for n in stats}, samples, peaks, probes).items():
            stats[name].gain = gain
    return stats


def _tensors(sample: dict):
    import torch

    return [torch.from_numpy(np.ascontiguousarray(a)) for a in sample.values()]


def _outputs(out) -> list:
    return list(out) if isinstance(out, (tuple, list)) else [out]


def output_gains(module, layers: dict, samples: list[dict], peaks: list[float], probes: int,
                 seed: int = 0) -> dict[str, np.ndarray]:
    """Per layer (name -> its torch Linear/Conv2d), per output channel: E over samples and random
    probes v ~ N(0, I) of sum over positions of (d(v . y)/d a)^2 / len(y), where y joins the module's
    outputs each over its peak and a is the layer's output. For an error e at a layer's output,
    E_v (v . J e)^2 = |J e|^2 (Hutchinson), so gain . (per-channel error) estimates the output's
    squared error from that layer alone: every layer's from the same few backward passes."""
    import torch

    acc = {name: 0.0 for name in layers}
    gen = torch.Generator().manual_seed(seed)

    def hook_for(name: str, channel_last: bool):
        def grad_hook(g):
            g = g.detach().double()
            acc[name] = acc[name] + (g * g).sum(dim=tuple(range(g.ndim - 1)) if channel_last
                                                 else tuple(d for d in range(g.ndim) if d != 1))

        def hook(_mod, _args, out):
            if not out.requires_grad:     # nothing before it needs a gradient (weights are frozen): start here
                out = out.detach().requires_grad_(True)
            out.register_hook(grad_hook)
            return out
        return hook

    hooks = [sub.register_forward_hook(hook_for(name, isinstance(sub, torch.nn.Linear)))
             for name, sub in layers.items()]
    params = [p.requires_grad for p in module.parameters()]
    count = 0
    try:
        for p in module.parameters():
            p.requires_grad_(False)        # gradients reach the layer outputs only, never the weights
        for sample in samples:
            with torch.enable_grad():
                outs = [o / max(p, 1e-12) for o, p in zip(_outputs(module(*_tensors(sample))), peaks)]
                total = sum(o.numel() for o in outs)
                if not any(o.requires_grad for o in outs):
                    continue
                outs = [o for o in outs if o.requires_grad]
                for k in range(probes):
                    vs = [torch.randn(o.shape, generator=gen, dtype=o.dtype) for o in outs]
                    torch.autograd.backward(outs, vs, retain_graph=k < probes - 1)
                    count += 1
    finally:
        for h in hooks:
            h.remove()
        for p, flag in zip(module.parameters(), params):
            p.requires_grad_(flag)
    return {name: (a / (count * total)).numpy() if not isinstance(a, float) else np.zeros(layers[name].weight.shape[0])
            for name, a in acc.items()}
