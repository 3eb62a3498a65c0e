"""The data types that cross layers: the `Clip` (dataset adapters -> methods and metrics), what a
method may see of it (`MethodInput`), what it outputs (`Prediction`), and what a metric is given
for one clip (`ClipPair`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from core.constants import SAMPLE_RATE


@dataclass
class Clip:
    """A clip with its ground truth.

    Arrays follow DESIGN.md: audio float32 mono at `sample_rate`; landmarks float32 T x 68 x 2 in
    pixel coordinates of the stored frames (iBUG-68 order); pose T x 6 (yaw, pitch, roll in degrees,
    tx, ty, tz); aus T x K occurrence (0/1) named by `au_names`; motion T x M expression coefficients.
    Frames (uint8 T x H x W x 3 RGB) are produced lazily by `frames_loader` and kept once loaded.
    """

    id: str
    speaker: str
    audio: np.ndarray
    landmarks: np.ndarray
    fps: float = 25.0
    sample_rate: int = SAMPLE_RATE
    emotion: str = "neutral"
    intensity: int = 1
    text: Optional[str] = None
    # T bool, False on frames whose reference landmarks were not found but gap-filled (prepared
    # real data); metrics leave those frames out. None: every frame's landmarks are real.
    landmarks_found: Optional[np.ndarray] = None
    landmarks3d: Optional[np.ndarray] = None
    pose: Optional[np.ndarray] = None
    aus: Optional[np.ndarray] = None
    au_names: tuple[str, ...] = ()
    motion: Optional[np.ndarray] = None
    meta: dict = field(default_factory=dict)
    frames_loader: Optional[Callable[[], np.ndarray]] = field(default=None, repr=False)
    _frames: Optional[np.ndarray] = field(default=None, repr=False)

    @property
    def num_frames(self) -> int:
        return int(self.landmarks.shape[0])

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps

    @property
    def has_frames(self) -> bool:
        return self._frames is not None or self.frames_loader is not None

    @property
    def frames(self) -> np.ndarray:
        if self._frames is None:
            if self.frames_loader is None:
                raise ValueError(f"clip {self.id} has no frames")
            self._frames = self.frames_loader()
        return self._frames

    def release_frames(self) -> None:
        """Drop loaded frames (they are reloaded on demand) to bound memory on long runs."""
        if self.frames_loader is not None:
            self._frames = None


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
class ClipPair:
    """What a metric sees for one clip: the prediction, the reference, and shared context.

    `pred` and `ref` map field names ("landmarks", "frames", "pose", ...) to arrays of the same
    layout as `Clip`. `points` lists the iBUG-68 indices that `pred["landmarks"]`
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
