"""Accuracy metrics shared by the build gate, validate and the tests."""

from __future__ import annotations

import numpy as np

# Identical outputs have an infinite PSNR; reports cap it so that JSON stays finite.
PSNR_CAP_DB = 200.0


def psnr(reference, actual, peak: float | None = None) -> float:
    """Peak signal-to-noise ratio of `actual` against `reference`, in dB.

    The peak defaults to the reference's largest magnitude (as Apple's Core ML
    Stable Diffusion converter measures component parity); images in [0, 1]
    pass peak=1.
    """
    ref = np.asarray(reference, dtype=np.float64)
    act = np.asarray(actual, dtype=np.float64)
    if ref.shape != act.shape:
        raise ValueError(f"psnr: shapes differ, {ref.shape} vs {act.shape}")
    if not np.all(np.isfinite(act)):
        return float("-inf")
    mse = float(np.mean((ref - act) ** 2))
    top = float(np.abs(ref).max()) if peak is None else float(peak)
    if mse == 0.0:
        return PSNR_CAP_DB
    if top == 0.0:
        return float("-inf")
    return min(PSNR_CAP_DB, 10.0 * np.log10(top * top / mse))


def nmse(reference, actual) -> float:
    """Mean squared error normalised by the reference's mean square."""
    ref = np.asarray(reference, dtype=np.float64)
    act = np.asarray(actual, dtype=np.float64)
    denom = float(np.mean(ref**2))
    return float(np.mean((ref - act) ** 2)) / denom if denom else float("inf")
