"""Method registry: every reimplemented method and reference baseline, by name."""

from __future__ import annotations

from typing import Any

from baselines.base import Method, MethodConfig
from core.types import MethodInput, Prediction

METHODS: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    if cls.name in METHODS:
        raise ValueError(f"method {cls.name} registered twice")
    METHODS[cls.name] = cls
    return cls


def method_class(name: str) -> type[Method]:
    _load_builtin()
    if name not in METHODS:
        raise KeyError(f"unknown method {name!r}; known: {sorted(METHODS)}")
    return METHODS[name]


def build_method(name: str, preset: str = "tiny", config: dict[str, Any] | None = None) -> Method:
    cls = method_class(name)
    return cls(cls.Config.preset(preset, **(config or {})))


def available_methods() -> list[str]:
    _load_builtin()
    return sorted(METHODS)


def _load_builtin() -> None:
    from baselines import reference  # noqa: F401  (runs the @register decorators)
    from baselines import kfusion  # noqa: F401
    from baselines import gnerf_a2l, spear_a2l  # noqa: F401


__all__ = ["Method", "MethodConfig", "MethodInput", "Prediction", "METHODS", "register",
           "method_class", "build_method", "available_methods"]
