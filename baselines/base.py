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

from bench.clip import Clip

INPUTS = frozenset({"audio", "identity_frame", "identity_landmarks", "emotion", "pose", "ground_truth"})
OUTPUTS = frozenset({"landmarks", "frames", "pose", "motion"})


@dataclass
class MethodInput:
    """The part of a clip a method may see. Fields it did not declare are None."""

    clip_id: str
    num_frames: int
    fps: float
    sample_rate: int
    audio: Optional[np.ndarray] = None
    identity_frame: Optional[np.ndarray] = None  # H x W x 3 uint8: the clip's first frame
    identity_landmarks: Optional[np.ndarray] = None  # 68 x 2: the clip's first-frame landmarks
    frame_size: Optional[tuple[int, int]] = None  # (H, W) of the frames to produce
    emotion: Optional[str] = None
    pose: Optional[np.ndarray] = None
    ground_truth: Optional[Clip] = None

    @classmethod
    def from_clip(cls, clip: Clip, inputs: frozenset[str]) -> "MethodInput":
        unknown = set(inputs) - INPUTS
        if unknown:
            raise ValueError(f"unknown method inputs {sorted(unknown)}; known: {sorted(INPUTS)}")
        frame = clip.frames[0] if "identity_frame" in inputs else None
        return cls(
            clip_id=clip.id,
            num_frames=clip.num_frames,
            fps=clip.fps,
            sample_rate=clip.sample_rate,
            audio=clip.audio if "audio" in inputs else None,
            identity_frame=frame,
            identity_landmarks=clip.landmarks[0].copy() if "identity_landmarks" in inputs else None,
            frame_size=tuple(frame.shape[:2]) if frame is not None else clip.meta.get("frame_size"),
            emotion=clip.emotion if "emotion" in inputs else None,
            pose=clip.pose if "pose" in inputs else None,
            ground_truth=clip if "ground_truth" in inputs else None,
        )


@dataclass
class Prediction:
    """A method's output for one clip. `points` lists the iBUG-68 indices `landmarks` covers."""

    clip_id: str
    landmarks: Optional[np.ndarray] = None  # T x P x 2, pixel coordinates
    points: tuple[int, ...] = tuple(range(68))
    frames: Optional[np.ndarray] = None  # T x H x W x 3 uint8 RGB
    pose: Optional[np.ndarray] = None  # T x 6
    motion: Optional[np.ndarray] = None  # T x M

    def fields(self) -> set[str]:
        return {k for k in ("landmarks", "frames", "pose", "motion") if getattr(self, k) is not None}


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
        from bench.checkpoint import save_checkpoint

        return save_checkpoint(path, self.name, self.config.to_dict(), self.state())

    @classmethod
    def load(cls, path: Path, config: Optional[MethodConfig] = None) -> "Method":
        """Rebuild from a checkpoint; refuses one whose config differs from `config` when given."""
        from bench.checkpoint import load_checkpoint

        saved_config, state = load_checkpoint(path, cls.name, config.to_dict() if config else None)
        method = cls(cls.Config(**saved_config))
        method.set_state(state)
        return method

    def predict(self, inp: MethodInput) -> Prediction:
        raise NotImplementedError
