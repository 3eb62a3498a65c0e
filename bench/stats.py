"""Aggregates with seeded bootstrap confidence intervals."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def bootstrap_indices(n: int, samples: int = 1000, seed: int = 0) -> np.ndarray:
    """samples x n clip indices drawn with replacement: the resamples of every bootstrap here."""
    return np.random.default_rng(seed).integers(0, n, size=(samples, n))


def percentile_interval(statistics: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap statistics (NaN ones, resamples without a value, left out)."""
    stats = np.asarray(statistics, dtype=np.float64)
    stats = stats[~np.isnan(stats)]
    if stats.size == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - confidence) / 2.0
    # inverted_cdf picks sample values (no interpolation), so +inf values (PSNR of identical
    # frames) give an infinite bound rather than NaN.
    lo, hi = np.quantile(stats, [alpha, 1.0 - alpha], method="inverted_cdf")
    return float(lo), float(hi)


def bootstrap_ci(values: Sequence[float], samples: int = 1000, seed: int = 0,
                 confidence: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean over clips (resampling clips with replacement)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return float("nan"), float("nan")
    if x.size == 1:
        return float(x[0]), float(x[0])
    idx = bootstrap_indices(x.size, samples, seed)
    with np.errstate(invalid="ignore"):
        means = x[idx].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha], method="inverted_cdf")
    return float(lo), float(hi)
