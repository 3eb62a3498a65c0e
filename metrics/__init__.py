"""Metrics: one module per metric family, each metric a small class with a declared contract
(`metrics.base.Metric`), registered by name in `METRICS`.

A metric of another package registers through the entry-point group ``talkbench.metrics``
(ARCHITECTURE.md, "Adding a metric").
"""

from __future__ import annotations

from core.errors import MetricError, MetricUnavailable
from core.types import ClipPair
from metrics.base import METRICS, Metric, available_metrics, build_metric, register

__all__ = [
    "ClipPair", "Metric", "MetricError", "MetricUnavailable", "METRICS", "register",
    "build_metric", "available_metrics",
]
