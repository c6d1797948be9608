"""The digits example's data and scorer: scikit-learn's 8x8 digits at 16x16, and a
small classifier (numpy inference) that measures class accuracy of generated digits.

Class accuracy = the fraction of generated images the classifier labels as the
class that was asked for.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgegen.core import safetensors_io
from edgegen.core.errors import EdgegenError

SIZE = 16
NUM_CLASSES = 10
ID2LABEL = {str(i): f"{i}, {w}" for i, w in enumerate(
    ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])}


def example_dir() -> Path:
    """examples/digits of the source tree this package runs from."""
    path = Path(__file__).resolve().parents[1] / "examples" / "digits"
    if not path.is_dir():
        raise EdgegenError(f"{path} not found: the digits example ships with edgegen's source tree; "
                           f"run from a checkout, or pass the model folder explicitly.")
    return path


def _axis_weights(n_in: int, n_out: int) -> np.ndarray:
    """Bilinear (align_corners=False) interpolation matrix of shape [n_out, n_in]."""
    src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = src - lo
    m = np.zeros((n_out, n_in))
    m[np.arange(n_out), lo] += 1 - frac
    m[np.arange(n_out), hi] += frac
    return m


def upsample(images8: np.ndarray, size: int = SIZE) -> np.ndarray:
    """[N, 8, 8] -> [N, size, size], bilinear."""
    m = _axis_weights(images8.shape[-1], size)
    return np.einsum("ij,njk,lk->nil", m, images8, m)


def load(seed: int = 0) -> dict:
    """The dataset split in two stratified halves: 'generator' (trains the DiT) and
    'classifier' (trains the scorer). Images are [N, 1, 16, 16] float32 in [-1, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = upsample(data.images / 16.0) * 2 - 1
    x = np.clip(x, -1, 1).astype(np.float32)[:, None]
    xa, xb, ya, yb = train_test_split(x, data.target, test_size=0.5, random_state=seed, stratify=data.target)
    return {"generator": (xa, ya), "classifier": (xb, yb)}


def features(images) -> np.ndarray:
    """Generated images ([N,16,16], [N,1,16,16] or [N,16,16,1]; uint8 0..255 or float in [-1, 1])
    -> 8x8 features in 0..16."""
    x = np.asarray(images)
    if x.ndim == 4:
        x = x[:, 0] if x.shape[1] == 1 else x[..., 0]
    x = x / 255.0 if x.dtype == np.uint8 else (x.astype(np.float64) + 1) / 2
    n, h, w = x.shape
    pooled = x.reshape(n, 8, h // 8, 8, w // 8).mean(axis=(2, 4))
    return (np.clip(pooled, 0, 1) * 16).reshape(n, 64)


class DigitClassifier:
    """A one-hidden-layer MLP (trained with scikit-learn), run in numpy."""

    def __init__(self, weights: dict[str, np.ndarray]):
        self.w = {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}

    @classmethod
    def load(cls, path: str | Path | None = None) -> "DigitClassifier":
        return cls(safetensors_io.load(path or example_dir() / "classifier.safetensors"))

    def predict(self, images) -> np.ndarray:
        h = np.maximum(features(images) @ self.w["w1"] + self.w["b1"], 0)
        return np.argmax(h @ self.w["w2"] + self.w["b2"], axis=1)

    def accuracy(self, images, labels) -> float:
        return float(np.mean(self.predict(images) == np.asarray(labels)))
