"""The metric contract.

A metric is a small class with a declared contract (the torchmetrics idea, without the state
machinery): its `name`, `version`, direction (`higher_is_better`), the prediction fields it
`needs`, its parameters with defaults, and either a per-clip value (`level = "clip"`) or one value
for the whole test set (`level = "set"`). Per-clip values are kept so reports can show confidence
intervals and breakdowns. A clip the metric cannot score raises `MetricError` with the reason;
the runner counts it as a failure. A metric that cannot run at all (weights missing) raises
`MetricUnavailable` from its constructor or first call.

A set-level metric is computed from one *part* per clip (`clip_parts`: what the clip contributes,
e.g. its Inception features or its AU occurrences) and `set_value_from_parts`, so that the harness
can resample clips for a bootstrap confidence interval without recomputing the parts
(`resampled_set_values`, which a metric may override with a faster exact computation).
"""

from __future__ import annotations

from typing import Any, ClassVar, Optional, Sequence

import numpy as np

from core.cache import Cache
from core.errors import MetricError
from core.hashing import code_fingerprint
from core.registry import Registry
from core.types import ClipPair


class Metric:
    """Base class. Subclasses set the class attributes and implement `clip_value` or `set_value`."""

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    higher_is_better: ClassVar[bool]
    needs: ClassVar[tuple[str, ...]]
    level: ClassVar[str] = "clip"  # "clip" or "set"
    defaults: ClassVar[dict[str, Any]] = {}
    # parameters whose value is one of a fixed set: checked when the metric is built and when a
    # protocol naming it is loaded (bench.protocol), so a typo fails before anything runs
    choices: ClassVar[dict[str, tuple]] = {}
    unit: ClassVar[str] = ""  # of the value: "px", "dB", ... ("" for a unitless score)

    def __init__(self, **params: Any) -> None:
        self.device = "cpu"  # the runner sets "cuda" when asked; metrics that use torch honour it
        # the scorer's content-keyed cache, set by it: a metric may keep there what several rows
        # share (the ground truth's features, computed once per clip instead of once per method)
        self.cache: Optional[Cache] = None
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise ValueError(
                f"metric {self.name}: unknown parameter(s) {unknown}; known: {sorted(self.defaults)}"
            )
        self.params = {**self.defaults, **params}
        for key, allowed in self.choices.items():
            self.check_choice(key, allowed)
        self.validate_params()

    def validate_params(self) -> None:
        """Raise ValueError naming the bad parameter. Override where parameters have constraints."""

    def check_choice(self, key: str, choices) -> None:
        """ValueError naming the parameter unless its value is one of `choices`."""
        value = self.params[key]
        if value not in choices:
            raise ValueError(f"metric {self.name}: parameter '{key}' must be one of "
                             f"{sorted(choices, key=str)}, got {value!r}")

    def on_device(self, module):
        """`module` (this metric's network) on the metric's `device`, moved only when the device
        changed since the last call."""
        if getattr(self, "_module_device", "cpu") != str(self.device):
            module.to(self.device)
            self._module_device = str(self.device)
        return module

    def identity(self) -> dict:
        """What a cached value depends on besides its inputs: name, version, parameters and the
        fingerprint of the code that computes it (this class's module and every talkbench
        module it imports), so an edited metric never returns a value its old code cached."""
        return {"name": self.name, "version": self.version, "params": self.params,
                "code": code_fingerprint(type(self))}

    def points_problem(self, points: tuple[int, ...]) -> Optional[str]:
        """Why predicted landmarks covering only `points` (iBUG-68 indices) cannot feed this
        metric, or None. The runner then reports the metric as not applicable to that method
        (e.g. head pose from a method that predicts only the jaw and mouth) instead of failing
        every clip."""
        return None

    @classmethod
    def higher_is_better_of(cls, params: dict[str, Any]) -> bool:
        """The direction of the value under these parameters (known without building the metric)."""
        return cls.higher_is_better

    @classmethod
    def unit_of(cls, params: dict[str, Any]) -> str:
        """The unit of the value under these parameters (known without building the metric)."""
        return cls.unit

    def clip_value(self, pair: ClipPair) -> float:
        raise NotImplementedError(f"{self.name} is a set-level metric")

    def clip_parts(self, pair: ClipPair) -> Any:
        """Set-level metrics: what one clip contributes to the set value (MetricError if nothing)."""
        raise NotImplementedError(f"{self.name} is a clip-level metric")

    def set_value_from_parts(self, parts: Sequence[Any]) -> float:
        """Set-level metrics: the value over the clips whose `clip_parts` are given, in order."""
        raise NotImplementedError(f"{self.name} is a clip-level metric")

    def set_value(self, pairs: Sequence[ClipPair]) -> float:
        """Set-level metrics: the value over these clips."""
        return self.set_value_from_parts([self.clip_parts(pair) for pair in pairs])

    def resampled_set_values(self, parts: Sequence[Any], indices: np.ndarray) -> np.ndarray:
        """Set values of bootstrap resamples: row k of `indices` (samples x clips) lists the clips
        of resample k. NaN where the metric has no value for a resample (MetricError)."""
        out = np.full(len(indices), np.nan)
        for k, row in enumerate(indices):
            try:
                out[k] = self.set_value_from_parts([parts[i] for i in row])
            except MetricError:
                pass
        return out

    def aggregate(self, values: Sequence[float]) -> float:
        """Set value from per-clip values: the mean over clips (every reference averages per video)."""
        return float(np.mean(values)) if len(values) else float("nan")


# Every metric class, by name: the modules of this package register with `@register`, other
# installed distributions through the entry-point group `talkbench.metrics`.
METRICS: Registry[type[Metric]] = Registry("metric", packages=("metrics",),
                                           entry_point_group="talkbench.metrics")
register = METRICS.register


def build_metric(name: str, params: dict[str, Any] | None = None) -> Metric:
    """The metric `name` with a protocol entry's parameters (unknown ones are a ValueError)."""
    return METRICS.get(name)(**(params or {}))


def available_metrics() -> list[str]:
    return METRICS.names()
