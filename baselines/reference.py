"""Reference baselines: the floor and ceiling every learned method is read against.

- `ground_truth`: copies the reference (the best value every metric can reach).
- `static`: repeats the identity frame and landmarks (ignores the audio).
- `mean_motion`: identity landmarks plus the train set's mean motion trajectory (ignores the audio).
- `audio_energy`: moves the landmarks along a direction fitted on the train set, in proportion to the
  audio's RMS energy (the simplest audio-driven method).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

import numpy as np

from baselines import register
from baselines.base import Method, MethodConfig
from core.types import MethodInput, Prediction
from core.audio import frame_rms
from core.constants import JAW, MOUTH
from core.types import Clip

MOVING_POINTS = tuple(sorted(set(JAW) | set(MOUTH)))  # what speech moves


def face_scale(landmarks68: np.ndarray) -> float:
    """Jaw width (points 0-16): displacements are stored per unit of it, so they transfer across faces."""
    return float(np.linalg.norm(landmarks68[16] - landmarks68[0]))


@register
class GroundTruth(Method):
    name = "ground_truth"
    description = "oracle: copies the reference landmarks and frames"
    inputs = frozenset({"ground_truth"})
    outputs = frozenset({"landmarks", "frames", "pose"})

    def predict(self, inp: MethodInput) -> Prediction:
        clip = inp.ground_truth
        frames = clip.frames if clip.has_frames else None
        return Prediction(inp.clip_id, landmarks=clip.landmarks.copy(), frames=frames,
                          pose=None if clip.pose is None else clip.pose.copy())


@register
class Static(Method):
    name = "static"
    description = "repeats the identity frame and landmarks; ignores the audio"
    inputs = frozenset({"identity_frame", "identity_landmarks"})
    outputs = frozenset({"landmarks", "frames"})

    def predict(self, inp: MethodInput) -> Prediction:
        t = inp.num_frames
        return Prediction(inp.clip_id,
                          landmarks=np.repeat(inp.identity_landmarks[None], t, axis=0).astype(np.float32),
                          frames=np.repeat(inp.identity_frame[None], t, axis=0))


@dataclass
class MeanMotionConfig(MethodConfig):
    max_frames: int = 250  # trajectory length kept; longer clips repeat its last frame

    PRESETS: ClassVar[dict] = {"tiny": {}, "paper": {"max_frames": 1000}}


@register
class MeanMotion(Method):
    name = "mean_motion"
    description = "identity landmarks + the train set's mean motion per frame index; ignores the audio"
    inputs = frozenset({"identity_landmarks"})
    outputs = frozenset({"landmarks"})
    Config = MeanMotionConfig
    trainable = True

    def __init__(self, config: Optional[MeanMotionConfig] = None) -> None:
        super().__init__(config)
        self.mean_motion: Optional[np.ndarray] = None  # T x 68 x 2, per unit of face scale

    def fit(self, train: list[Clip], val: list[Clip], **_: object) -> None:
        if not train:
            raise ValueError("mean_motion needs at least one training clip")
        tmax = min(self.config.max_frames, max(c.num_frames for c in train))
        total = np.zeros((tmax, 68, 2))
        count = np.zeros(tmax)
        for clip in train:
            n = min(tmax, clip.num_frames)
            disp = (clip.landmarks[:n] - clip.landmarks[0]) / face_scale(clip.landmarks[0])
            total[:n] += disp
            count[:n] += 1
        self.mean_motion = (total / count[:, None, None]).astype(np.float32)

    def state(self) -> dict[str, np.ndarray]:
        return {"mean_motion": self.mean_motion}

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        self.mean_motion = state["mean_motion"]

    def predict(self, inp: MethodInput) -> Prediction:
        if self.mean_motion is None:
            raise RuntimeError("mean_motion: fit or load before predict")
        index = np.minimum(np.arange(inp.num_frames), len(self.mean_motion) - 1)
        ident = inp.identity_landmarks
        landmarks = ident[None] + self.mean_motion[index] * face_scale(ident)
        return Prediction(inp.clip_id, landmarks=landmarks.astype(np.float32))


@dataclass
class AudioEnergyConfig(MethodConfig):
    quantile: float = 0.95  # per-clip energy is divided by this quantile: loudness-invariant
    smooth_frames: int = 7  # Hann window over the energy: a jaw cannot follow frame-level flicker

    PRESETS: ClassVar[dict] = {"tiny": {}, "paper": {}}


@register
class AudioEnergy(Method):
    name = "audio_energy"
    description = "opens the mouth in proportion to the audio's RMS energy (least-squares direction)"
    inputs = frozenset({"audio", "identity_landmarks"})
    outputs = frozenset({"landmarks"})
    Config = AudioEnergyConfig
    trainable = True

    def __init__(self, config: Optional[AudioEnergyConfig] = None) -> None:
        super().__init__(config)
        self.direction: Optional[np.ndarray] = None  # 68 x 2 displacement per unit energy
        self.offset: Optional[np.ndarray] = None  # 68 x 2 displacement at zero energy

    def _energy(self, audio: np.ndarray, sample_rate: int, fps: float, num_frames: int) -> np.ndarray:
        rms = frame_rms(audio, sample_rate, fps, num_frames)
        k = self.config.smooth_frames
        if k > 1:
            window = np.hanning(k + 2)[1:-1]
            rms = np.convolve(np.pad(rms, (k // 2, (k - 1) // 2), mode="edge"), window / window.sum(), mode="valid")
        scale = np.quantile(rms, self.config.quantile)
        return rms / scale if scale > 0 else np.zeros_like(rms)

    def fit(self, train: list[Clip], val: list[Clip], **_: object) -> None:
        energies, disps = [], []
        for clip in train:
            energies.append(self._energy(clip.audio, clip.sample_rate, clip.fps, clip.num_frames))
            disps.append(((clip.landmarks - clip.landmarks[0]) / face_scale(clip.landmarks[0])).reshape(
                clip.num_frames, -1))
        e = np.concatenate(energies)
        d = np.concatenate(disps)
        design = np.stack([e, np.ones_like(e)], axis=1)
        coef, *_ = np.linalg.lstsq(design, d, rcond=None)  # one line per coordinate
        mask = np.zeros((68, 2), dtype=bool)
        mask[list(MOVING_POINTS)] = True  # only speech-moved points follow the audio
        self.direction = np.where(mask, coef[0].reshape(68, 2), 0.0).astype(np.float32)
        self.offset = np.where(mask, coef[1].reshape(68, 2), 0.0).astype(np.float32)

    def state(self) -> dict[str, np.ndarray]:
        return {"direction": self.direction, "offset": self.offset}

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        self.direction, self.offset = state["direction"], state["offset"]

    def predict(self, inp: MethodInput) -> Prediction:
        if self.direction is None:
            raise RuntimeError("audio_energy: fit or load before predict")
        energy = self._energy(inp.audio, inp.sample_rate, inp.fps, inp.num_frames)
        ident = inp.identity_landmarks
        disp = energy[:, None, None] * self.direction[None] + self.offset[None]
        return Prediction(inp.clip_id, landmarks=(ident[None] + disp * face_scale(ident)).astype(np.float32))
