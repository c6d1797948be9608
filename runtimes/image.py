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


def grid(images: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Tile N HxWxC uint8 images into one (rows*H)x(cols*W)xC image."""
    n, h, w, c = images.shape
    if n > rows * cols:
        raise ValueError(f"{n} images do not fit a {rows}x{cols} grid")
    canvas = np.zeros((rows * h, cols * w, c), dtype=images.dtype)
    for i, img in enumerate(images):
        r, q = divmod(i, cols)
        canvas[r * h:(r + 1) * h, q * w:(q + 1) * w] = img
    return canvas
