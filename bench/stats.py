"""Aggregates with seeded bootstrap confidence intervals."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def bootstrap_ci(values: Sequence[float], samples: int = 1000, seed: int = 0,
                 confidence: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean over clips (resampling clips with replacement)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return float("nan"), float("nan")
    if x.size == 1:
        return float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(samples, x.size))
    with np.errstate(invalid="ignore"):
        means = x[idx].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    # inverted_cdf picks sample values (no interpolation), so +inf values (PSNR of identical
    # frames) give an infinite bound rather than NaN.
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha], method="inverted_cdf")
    return float(lo), float(hi)
