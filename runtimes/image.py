"""Decoded-image post-processing and saving, without torch."""

from __future__ import annotations

import numpy as np


def to_uint8(decoded: np.ndarray) -> np.ndarray:
    """VAE output in [-1, 1], NCHW -> uint8 NHWC, rounded as diffusers' image processor does."""
    img = np.clip(decoded / 2 + 0.5, 0.0, 1.0).transpose(0, 2, 3, 1)
    return (img * 255).round().astype(np.uint8)


def to_pil(images: np.ndarray) -> list:
    from PIL import Image

    return [Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img) for img in images]


def grid(images: np.ndarray, rows: int, cols: int, gap: int = 0, fill: int = 128) -> np.ndarray:
    """Tile N HxWxC uint8 images into one image, `gap` pixels of `fill` between tiles."""
    n, h, w, c = images.shape
    if n > rows * cols:
        raise ValueError(f"{n} images do not fit a {rows}x{cols} grid")
    canvas = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap, c), fill, dtype=images.dtype)
    for i, img in enumerate(images):
        r, q = divmod(i, cols)
        y, x = r * (h + gap), q * (w + gap)
        canvas[y:y + h, x:x + w] = img
    return canvas
