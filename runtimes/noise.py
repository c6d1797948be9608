"""Seeded standard-normal noise that the native (C) runtime draws identically.

`normal(seed, shape)` is defined exactly, so that any language can reproduce it
(runtimes/native/src/rng.c does, as `eg_normal_fill`):

1. A SplitMix64 stream with state `seed` (an integer in 0 .. 2**64-1), all arithmetic
   modulo 2**64: for k = 1, 2, 3, ...
       z = seed + k * 0x9E3779B97F4A7C15
       z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
       z = (z ^ (z >> 27)) * 0x94D049BB133111EB
       x[k-1] = z ^ (z >> 31)
2. Box-Muller in double precision on consecutive pairs (x[2j], x[2j+1]):
       u1 = ((x[2j] >> 11) + 1) * 2**-53          in (0, 1]
       u2 = (x[2j+1] >> 11) * 2**-53              in [0, 1)
       r = sqrt(-2 * log(u1));  theta = (2 * pi) * u2
       out[2j] = r * cos(theta);  out[2j+1] = r * sin(theta)
   For an odd count the last pair gives only its cosine value.
3. Each value is rounded to float32; values fill the array in C (row-major) order.

`seed=None` draws a fresh random seed.

Samplers that add noise during the loop (LCM, Euler ancestral) draw step i's noise
(i = 0, 1, ...) as `step_noise(seed, i, shape)` = normal(step_seed(seed, i), shape), where
step_seed(seed, i) is output i + 1 of the SplitMix64 stream above started at
seed ^ STEP_SEED_SALT (rng.c: eg_step_noise_fill). So one seed fixes a whole run, and a step's
draw does not depend on how many values the latents took.
"""

from __future__ import annotations

import secrets

import numpy as np

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def splitmix64(seed: int, count: int) -> np.ndarray:
    """The first `count` outputs of SplitMix64 started at state `seed`, as uint64."""
    k = np.arange(1, count + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + k * _GAMMA
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


STEP_SEED_SALT = 0x5354455053454544   # "STEPSEED"


def step_seed(seed: int, index: int) -> int:
    """The seed of denoising step `index`'s noise in a run seeded with `seed`."""
    if index < 0:
        raise ValueError(f"step index must be >= 0, got {index}")
    return int(splitmix64(int(seed) ^ STEP_SEED_SALT, index + 1)[index])


def step_noise(seed: int, index: int, shape) -> np.ndarray:
    """The standard-normal noise a sampler adds at denoising step `index` of a run seeded with `seed`."""
    return normal(step_seed(seed, index), shape)


def normal(seed: int | None, shape) -> np.ndarray:
    """Standard-normal float32 array of `shape` drawn from `seed` as the module docstring defines."""
    if seed is None:
        seed = secrets.randbits(64)
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an integer, got {type(seed).__name__}")
    seed = int(seed)
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed must be in 0..2**64-1, got {seed}")
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(int(d) for d in shape)
    n = int(np.prod(shape, dtype=np.int64))
    pairs = (n + 1) // 2
    x = splitmix64(seed, 2 * pairs).reshape(pairs, 2)
    u1 = ((x[:, 0] >> np.uint64(11)) + np.uint64(1)).astype(np.float64) * 2.0**-53
    u2 = (x[:, 1] >> np.uint64(11)).astype(np.float64) * 2.0**-53
    r = np.sqrt(-2.0 * np.log(u1))
    theta = (2.0 * np.pi) * u2
    out = np.empty((pairs, 2), np.float64)
    out[:, 0] = r * np.cos(theta)
    out[:, 1] = r * np.sin(theta)
    return out.reshape(-1)[:n].astype(np.float32).reshape(shape)
