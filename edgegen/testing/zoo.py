"""Small torch architectures that each carry a graph pattern a quantizer must survive.

Each entry of ZOO is a factory returning (module, example inputs): random weights with a fixed seed,
tiny shapes (a build takes seconds), channels of 32 so that most matmul/conv weights are wide enough
to be quantized (converters.quantize.MIN_WIDTH).
"""

from __future__ import annotations

import numpy as np

C = 32   # channels / features


def _torch():
    import torch

    torch.manual_seed(0)
    return torch


def sequential():
    """A plain Sequential of convs and activations."""
    torch = _torch()
    nn = torch.nn
    module = nn.Sequential(nn.Conv2d(3, C, 3, padding=1), nn.ReLU(), nn.Conv2d(C, C, 3, padding=1), nn.SiLU(),
                           nn.Conv2d(C, C, 1), nn.ReLU(), nn.Conv2d(C, 3, 3, padding=1))
    return module, {"input": _image(3)}


def residual():
    """ResNet blocks: GroupNorm -> SiLU -> conv twice, plus the input (through a 1x1 conv where the
    channels change)."""
    torch = _torch()
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.n1, self.c1 = nn.GroupNorm(8, cin), nn.Conv2d(cin, cout, 3, padding=1)
            self.n2, self.c2 = nn.GroupNorm(8, cout), nn.Conv2d(cout, cout, 3, padding=1)
            self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

        def forward(self, x):
            h = self.c1(torch.nn.functional.silu(self.n1(x)))
            return self.skip(x) + self.c2(torch.nn.functional.silu(self.n2(h)))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.first, self.b1, self.b2 = nn.Conv2d(3, C, 3, padding=1), Block(C, C), Block(C, 2 * C)
            self.last = nn.Conv2d(2 * C, 3, 3, padding=1)

        def forward(self, x):
            return self.last(self.b2(self.b1(self.first(x))))

    return Net(), {"x": _image(3)}


def upsample_bias_free():
    """TAESD / AutoencoderTiny's decoder: Block, nearest-neighbour Upsample, conv(bias=False), Block
    (conv-ReLU-conv-ReLU-conv plus its input)."""
    torch = _torch()
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Sequential(nn.Conv2d(C, C, 3, padding=1), nn.ReLU(), nn.Conv2d(C, C, 3, padding=1),
                                      nn.ReLU(), nn.Conv2d(C, C, 3, padding=1))

        def forward(self, x):
            return torch.relu(self.conv(x) + x)

    module = nn.Sequential(nn.Conv2d(4, C, 3, padding=1), nn.ReLU(), Block(), nn.Upsample(scale_factor=2),
                           nn.Conv2d(C, C, 3, padding=1, bias=False), Block(), nn.Upsample(scale_factor=2),
                           nn.Conv2d(C, C, 3, padding=1, bias=False), Block(), nn.Conv2d(C, 3, 3, padding=1))
    return module, {"input": _image(4, 4)}


def depthwise_grouped():
    """MobileNet-style: depthwise 3x3 (one input channel per filter), pointwise, and a grouped conv."""
    torch = _torch()
    nn = torch.nn
    module = nn.Sequential(nn.Conv2d(3, C, 3, padding=1), nn.ReLU(),
                           nn.Conv2d(C, C, 3, padding=1, groups=C), nn.ReLU(), nn.Conv2d(C, C, 1), nn.ReLU(),
                           nn.Conv2d(C, 2 * C, 3, padding=1, groups=2), nn.ReLU(),
                           nn.Conv2d(2 * C, 2 * C, 3, padding=1, groups=4), nn.ReLU(), nn.Conv2d(2 * C, 3, 1))
    return module, {"input": _image(3)}


def transformer():
    """A pre-norm transformer block over tokens: LayerNorm, multi-head self-attention (bias-free q, k, v),
    a GELU MLP, residuals; a linear in and out."""
    torch = _torch()
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self, heads=4):
            super().__init__()
            self.heads = heads
            self.n1, self.n2 = nn.LayerNorm(C), nn.LayerNorm(C)
            self.q, self.k, self.v = (nn.Linear(C, C, bias=False) for _ in range(3))
            self.o = nn.Linear(C, C)
            self.mlp = nn.Sequential(nn.Linear(C, 4 * C), nn.GELU(), nn.Linear(4 * C, C))

        def forward(self, x):
            b, n, _ = x.shape
            h = self.n1(x)

            def split(t):
                return t.reshape(b, n, self.heads, C // self.heads).transpose(1, 2)

            att = torch.nn.functional.scaled_dot_product_attention(split(self.q(h)), split(self.k(h)),
                                                                   split(self.v(h)))
            x = x + self.o(att.transpose(1, 2).reshape(b, n, C))
            return x + self.mlp(self.n2(x))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp, self.blocks, self.out = nn.Linear(8, C), nn.Sequential(Block(), Block()), nn.Linear(C, 8)

        def forward(self, tokens):
            return self.out(self.blocks(self.inp(tokens)))

    return Net(), {"tokens": np.random.default_rng(0).standard_normal((1, 16, 8)).astype(np.float32)}


def shared_weights():
    """One linear applied twice (weight sharing), a linear whose weight is tied to another's, and one of its
    own between them."""
    torch = _torch()
    nn = torch.nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp, self.shared, self.mid = nn.Linear(8, C), nn.Linear(C, C), nn.Linear(C, C)
            self.tied, self.own = nn.Linear(C, C), nn.Linear(C, C)
            self.tied.weight = self.mid.weight
            self.out = nn.Linear(C, 8)

        def forward(self, x):
            h = torch.relu(self.shared(torch.relu(self.shared(torch.relu(self.inp(x))))))
            h = torch.relu(self.tied(torch.relu(self.own(torch.relu(self.mid(h))))))
            return self.out(h)

    return Net(), {"x": np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)}


def groupnorm_bias_free():
    """A bias-free conv straight after GroupNorm (its affine shift is the only bias), as in VAE
    attention and some UNet variants."""
    torch = _torch()
    nn = torch.nn
    module = nn.Sequential(nn.Conv2d(3, C, 3, padding=1), nn.GroupNorm(8, C),
                           nn.Conv2d(C, C, 3, padding=1, bias=False), nn.GroupNorm(8, C), nn.SiLU(),
                           nn.Conv2d(C, C, 1, bias=False), nn.GroupNorm(4, C), nn.Conv2d(C, 3, 3, padding=1))
    return module, {"input": _image(3)}


def _image(channels: int, size: int = 8) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((1, channels, size, size)).astype(np.float32)


ZOO = {f.__name__: f for f in (sequential, residual, upsample_bias_free, depthwise_grouped, transformer,
                               shared_weights, groupnorm_bias_free)}


def combined():
    """Every architecture of ZOO in one module (one compile per scheme instead of one per architecture
    and scheme): forward(**{name: input}) -> {name: that architecture's output}."""
    torch = _torch()
    made = {name: make() for name, make in ZOO.items()}

    class Zoo(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.parts = torch.nn.ModuleDict({name: module for name, (module, _) in made.items()})

        def forward(self, **inputs):
            return {name: part(inputs[name]) for name, part in self.parts.items()}

    return Zoo(), {name: next(iter(inputs.values())) for name, (_, inputs) in made.items()}
