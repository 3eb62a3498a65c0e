"""The metric contract.

A metric is a small class with a declared contract (the torchmetrics idea, without the state
machinery): its `name`, `version`, direction (`higher_is_better`), the prediction fields it
`needs`, its parameters with defaults, and either a per-clip value (`level = "clip"`) or one value
for the whole test set (`level = "set"`). Per-clip values are kept so reports can show confidence
intervals and breakdowns. A clip the metric cannot score raises `MetricError` with the reason;
the runner counts it as a failure. A metric that cannot run at all (weights missing) raises
`MetricUnavailable` from its constructor or first call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional, Sequence

import numpy as np


class MetricError(Exception):
    """This clip cannot be scored by this metric (the message says why)."""


class MetricUnavailable(Exception):
    """The metric cannot run at all here (e.g. missing weights); the message says how to fix it."""


@dataclass
class ClipPair:
    """What a metric sees for one clip: the prediction, the reference, and shared context.

    `pred` and `ref` map field names ("landmarks", "frames", "pose", ...) to arrays of the same
    layout as `bench.clip.Clip`. `points` lists the iBUG-68 indices that `pred["landmarks"]`
    covers, in order (all 68 unless a method predicts a subset); `ref["landmarks"]` always holds
    all 68 points (index it with `points`; normalisers need all 68). `frame_mask` marks frames usable for landmark comparison (False where a detector found no face); None means
    all frames are usable.
    """

    clip_id: str
    pred: dict[str, np.ndarray]
    ref: dict[str, np.ndarray]
    points: tuple[int, ...] = tuple(range(68))
    frame_mask: Optional[np.ndarray] = None
    fps: float = 25.0
    audio: Optional[np.ndarray] = None
    sample_rate: int = 16000
    meta: dict = field(default_factory=dict)


class Metric:
    """Base class. Subclasses set the class attributes and implement `clip_value` or `set_value`."""

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    higher_is_better: ClassVar[bool]
    needs: ClassVar[tuple[str, ...]]
    level: ClassVar[str] = "clip"  # "clip" or "set"
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, **params: Any) -> None:
        self.device = "cpu"  # the runner sets "cuda" when asked; metrics that use torch honour it
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise ValueError(
                f"metric {self.name}: unknown parameter(s) {unknown}; known: {sorted(self.defaults)}"
            )
        self.params = {**self.defaults, **params}
        self.validate_params()

    def validate_params(self) -> None:
        """Raise ValueError naming the bad parameter. Override where parameters have constraints."""

    def check_choice(self, key: str, choices) -> None:
        """ValueError naming the parameter unless its value is one of `choices`."""
        value = self.params[key]
        if value not in choices:
            raise ValueError(f"metric {self.name}: parameter '{key}' must be one of "
                             f"{sorted(choices, key=str)}, got {value!r}")

    def identity(self) -> dict:
        """What a cached value depends on besides its inputs."""
        return {"name": self.name, "version": self.version, "params": self.params}

    def points_problem(self, points: tuple[int, ...]) -> Optional[str]:
        """Why predicted landmarks covering only `points` (iBUG-68 indices) cannot feed this
        metric, or None. The runner then reports the metric as not applicable to that method
        (e.g. head pose from a method that predicts only the jaw and mouth) instead of failing
        every clip."""
        return None

    def clip_value(self, pair: ClipPair) -> float:
        raise NotImplementedError(f"{self.name} is a set-level metric")

    def set_value(self, pairs: Sequence[ClipPair]) -> float:
        raise NotImplementedError(f"{self.name} is a clip-level metric")

    def aggregate(self, values: Sequence[float]) -> float:
        """Set value from per-clip values: the mean over clips (every reference averages per video)."""
        return float(np.mean(values)) if len(values) else float("nan")


def load_state_dict_strict(model: Any, path: Any, weights_name: str, layout: str) -> Any:
    """Load the torch state-dict file `path` into `model` with strict keys, in eval mode.

    A file torch cannot read (truncated download, an HTML page from a file host) or one with other
    keys or shapes is `MetricUnavailable` naming the file, what layout was expected and the
    command that replaces it. Keys saved from `nn.DataParallel` ("module." prefix) and files that
    wrap the dict in {"state_dict": ...} are accepted, as the official checkpoints come both ways.
    """
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise MetricUnavailable(f"{path} is not a readable {layout} state dict ({exc}); replace it "
                                f"with `talkbench weights download {weights_name} --force`") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise MetricUnavailable(f"{path} does not have the layout of {layout} "
                                f"({str(exc).splitlines()[0]})") from exc
    return model.eval()


def array_digest(*arrays: Optional[np.ndarray]) -> str:
    """A content digest of arrays (dtype, shape and bytes): the key of per-clip result caches that
    several metrics share (one SyncNet evaluation for LSE-D/LSE-C/offset, one Hopenet pass for
    Diversity/BeatAlign)."""
    import hashlib

    h = hashlib.blake2b(digest_size=20)
    for a in arrays:
        if a is None:
            h.update(b"none")
            continue
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()
