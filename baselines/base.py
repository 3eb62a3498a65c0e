"""The Method interface every reimplemented method implements, and its Prediction.

A method declares the inputs it consumes and the outputs it produces. The runner hands `predict`
a `MethodInput` holding only the declared inputs, so a method cannot read ground truth by
accident; only oracles declare the `ground_truth` input. Hyperparameters live in a dataclass config
with named presets (`tiny` for CPU in seconds, `paper` for the paper's sizes).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Optional

import numpy as np

from core.registry import Registry
from core.types import Clip, MethodInput, Prediction

@dataclass
class MethodConfig:
    """Base of every method config. Subclasses add fields and list presets in `PRESETS`."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"tiny": {}, "paper": {}}

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "MethodConfig":
        if name not in cls.PRESETS:
            raise KeyError(f"{cls.__name__}: unknown preset {name!r}; known: {sorted(cls.PRESETS)}")
        return cls(**{**cls.PRESETS[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def hash(self) -> str:
        blob = json.dumps(self.to_dict(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


class Method:
    """Base class. Subclasses set `name`, `inputs`, `outputs`, `Config` and implement predict."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    inputs: ClassVar[frozenset[str]]
    outputs: ClassVar[frozenset[str]]
    Config: ClassVar[type[MethodConfig]] = MethodConfig
    trainable: ClassVar[bool] = False
    # Method names of this method's ablation variants (the paper's ablation table), added as rows
    # by `talkbench run --ablations`.
    ablations: ClassVar[tuple[str, ...]] = ()
    # True: `fit` trains on per-frame AU labels (`Clip.aus`, AU10/14/20/25/26). Clips without them
    # (real datasets) get them from the protocol's AU backend before fit (`bench.runner`).
    needs_au_labels: ClassVar[bool] = False

    def __init__(self, config: Optional[MethodConfig] = None) -> None:
        self.config = config if config is not None else self.Config.preset("tiny")

    def fit(self, train: list[Clip], val: list[Clip], *, device: str = "cpu", seed: int = 0,
            workdir: Optional[Path] = None) -> None:
        """Train on the train split. Methods with nothing to learn keep this no-op."""

    def state(self) -> dict[str, np.ndarray]:
        """Learned arrays to checkpoint (empty for methods with nothing to learn)."""
        return {}

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        if state:
            raise ValueError(f"{self.name} has no learned state but the checkpoint holds {sorted(state)}")

    def save(self, path: Path) -> str:
        """Write config + state; returns the checkpoint's sha256."""
        from core.checkpoint import save_checkpoint

        return save_checkpoint(path, self.name, self.config.to_dict(), self.state())

    @classmethod
    def load(cls, path: Path, config: Optional[MethodConfig] = None) -> "Method":
        """Rebuild from a checkpoint; refuses one whose config differs from `config` when given."""
        from core.checkpoint import load_checkpoint

        saved_config, state = load_checkpoint(path, cls.name, config.to_dict() if config else None)
        method = cls(cls.Config(**saved_config))
        method.set_state(state)
        return method

    def predict(self, inp: MethodInput) -> Prediction:
        raise NotImplementedError

    def fit_report(self, splits: dict[str, list[Clip]]) -> Optional[dict]:
        """After fit or load: a JSON-able report on the trained parts themselves (e.g. a pre-trained
        sub-network's own scores on the splits' ground truth), written by the harness to the
        results folder as `_<row>_fit_report.json`. None (the default): nothing to report."""
        return None


# Every method, by name: the modules of this package register with `@register`, other installed
# distributions through the entry-point group `talkbench.methods`.
METHODS: Registry[type[Method]] = Registry("method", packages=("baselines",),
                                           entry_point_group="talkbench.methods")
register = METHODS.register


def method_class(name: str) -> type[Method]:
    return METHODS.get(name)


def build_method(name: str, preset: str = "tiny", config: dict[str, Any] | None = None) -> Method:
    cls = method_class(name)
    return cls(cls.Config.preset(preset, **(config or {})))


def available_methods() -> list[str]:
    return METHODS.names()
