"""Metric registry: metric classes by name, built from a protocol's metric entries."""

from __future__ import annotations

from typing import Any

from core.types import ClipPair
from metrics.base import Metric
from core.errors import MetricError, MetricUnavailable

METRICS: dict[str, type[Metric]] = {}


def register(cls: type[Metric]) -> type[Metric]:
    if cls.name in METRICS:
        raise ValueError(f"metric {cls.name} registered twice")
    METRICS[cls.name] = cls
    return cls


def build_metric(name: str, params: dict[str, Any] | None = None) -> Metric:
    _load_builtin()
    if name not in METRICS:
        raise KeyError(f"unknown metric {name!r}; known: {sorted(METRICS)}")
    return METRICS[name](**(params or {}))


def available_metrics() -> list[str]:
    _load_builtin()
    return sorted(METRICS)


def _load_builtin() -> None:
    # Importing the family modules runs their @register decorators.
    from metrics import au, fid, identity, image, landmark, motion, perceptual, syncnet  # noqa: F401


__all__ = [
    "ClipPair", "Metric", "MetricError", "MetricUnavailable", "METRICS", "register",
    "build_metric", "available_metrics",
]
