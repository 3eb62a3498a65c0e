"""The Clip: one training or test unit, shared by every dataset adapter, method and metric."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

# iBUG-68 index groups (dlib / imutils order).
JAW = tuple(range(0, 17))
MOUTH = tuple(range(48, 68))
FACE = tuple(range(0, 68))
RIGHT_EYE_OUTER, LEFT_EYE_OUTER = 36, 45

SAMPLE_RATE = 16000


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
