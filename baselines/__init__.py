"""Methods: the reimplemented papers (one subpackage each) and the reference baselines, each a
`baselines.base.Method` registered by name in `METHODS`.

A method of another package registers through the entry-point group ``talkbench.methods``
(ARCHITECTURE.md, "Adding a method").
"""

from __future__ import annotations

from baselines.base import (METHODS, Method, MethodConfig, available_methods, build_method,
                            method_class, register)
from core.types import MethodInput, Prediction

__all__ = ["Method", "MethodConfig", "MethodInput", "Prediction", "METHODS", "register",
           "method_class", "build_method", "available_methods"]
