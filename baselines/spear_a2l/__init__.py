"""SPEAR stage 1: audio + pose + reference landmarks -> lower-face landmarks (Cao & Tran, 2025).

Registered methods (Table 3 of the paper: the same network with the audio front-end swapped):

    spear_a2l                       HuBERT, hidden layers 6, 12, 24 (the paper's)
    spear_a2l_mfcc                  MFCC (13 coefficients + deltas + delta-deltas)
    spear_a2l_wav2vec2_conformer    Wav2Vec2-Conformer
    spear_a2l_unispeech             UniSpeech

Checkpoints of the `paper` presets: the paper names none, only the model families, and that its
HuBERT has 24 layers of 1024 features (a "large" model). These are talkbench's choices, large
(24 x 1024) public checkpoints with a transformers class, so layers 6, 12 and 24 exist in each:
hubert `facebook/hubert-large-ls960-ft`, wav2vec2_conformer
`facebook/wav2vec2-conformer-rope-large-960h-ft`, unispeech `microsoft/unispeech-large-1500h-cv`.

Inputs: `audio`, `identity_landmarks` (the reference landmarks), `pose` (the driving pose sequence).
Output: landmarks for `POINTS` = jaw 0-16 + mouth 48-67 (37 iBUG-68 points).

Which points ("57 lower-face points out of 131"): SPEAR inherits IP_LAP's MediaPipe split, where
the 57 "content" points are the 17 lower face-oval points plus the 40 lip points and the 74 "pose"
points are nose, eyes, brows and the upper oval. The iBUG-68 counterpart of that split is jaw 0-16
+ mouth 48-67 (37 points); the nose, eyes and brows (including the lower nose 31-35) only move
with the rigid head, which SPEAR gives the network as its pose input rather than predicting it.

Other choices where the paper is silent (see also `model.py`):
- Pose input: SPEAR feeds the driving frames' upper-face landmarks (B, T, 2, 74); a talkbench
  method receives the pose itself (on MEAD: solvePnP on the detected landmarks, `_spear.yaml`;
  frames without an estimate are interpolated from their neighbours, `fill_gaps`), so the pose
  encoder reads (pose_t - pose_0) per frame, divided
  by the training set's per-component standard deviation (a model buffer, saved in the state).
- Coordinates: every landmark is expressed relative to the identity frame (its 68-point centroid,
  in units of its jaw width); the network predicts a displacement that is added to the identity
  frame's points (the reference encoder still sees the whole 68-point reference).
- Training windows of `window_frames` frames with the reference = the clip's first frame (what
  `predict` gets); prediction runs overlapping windows (hop `infer_hop` x window) and blends them
  with triangular weights, so a clip of any length sees the context length it was trained on.
- Optimiser: the shared trainer's Adam + cosine annealing instead of the paper's ExponentialLR.
- Epochs: the paper trains stage 1 for 200 epochs and does not say how its clips are cut. The
  `paper` preset's epoch is a pass over the training data (`epoch_mode="all_windows"`): every
  training clip is tiled by non-overlapping `window_frames` windows (25 frames, talkbench's choice:
  1 s at the paper's 25 fps; the paper gives no window length) and each window is visited once. The
  tiny preset draws one random window per clip per epoch (`epoch_mode="one_per_clip"`), so its 60
  epochs are 60 crops of each clip, talkbench's CPU tuning, not passes over the data.
- Gradient clipping: the paper does not mention any, so the `paper` preset does not clip
  (`grad_clip=0`; not run at paper scale here, for want of MEAD and the pretrained encoders on the
  test machines: if such a fit diverges, `grad_clip` is the knob). The tiny preset clips the global
  gradient norm at 1.0 because at its learning rate (2e-3, 20x the paper's) the gradient norm
  spikes: measured on synthtalk (tiny preset, seed 0, 480 steps) median 0.57, 95th percentile 3.3,
  largest 25, the clip binding on 31 % of the steps. Without it the fit ends worse: val loss 0.0088
  instead of 0.0066, mouth (M-LD, M-LVD) on the test speakers (1.69, 0.55) instead of (1.55, 0.52).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import numpy as np
import torch

from baselines import register
from baselines.audio_frontends import build_frontend
from core.types import MethodInput, Prediction
from baselines.spear_a2l.model import SpearA2L, spear_loss
from baselines.torch_method import (TorchMethod, TorchMethodConfig, crop_starts, frame_audio,
                                    landmarks_denormalise, landmarks_normalise, samples_per_frame,
                                    window_starts)
from core.constants import JAW, MOUTH
from core.types import Clip

POINTS: tuple[int, ...] = tuple(JAW) + tuple(MOUTH)  # 37 lower-face points

_TINY_NET = dict(d_model=64, heads=4, layers=2, ff=128, dropout=0.1, audio_channels=(16, 32, 64),
                 landmark_channels=(16, 32, 64), pose_blocks=1)
_PAPER_NET = dict(d_model=512, heads=4, layers=4, ff=1024, dropout=0.1, audio_channels=(32, 64, 128, 256, 512),
                  landmark_channels=(64, 128, 256, 512), pose_blocks=2)
_TINY_TRAIN = dict(epochs=60, lr=2e-3, lr_min=1e-4, batch_size=8, window_frames=32, epoch_mode="one_per_clip",
                   grad_clip=1.0, threads=1)
_PAPER_TRAIN = dict(epochs=200, lr=1e-4, lr_min=1e-6, batch_size=32, window_frames=25, epoch_mode="all_windows",
                    grad_clip=0.0)
_TINY_FE = dict(pretrained=None, fe_hidden=48, fe_num_layers=3, fe_heads=4, fe_conv_dim=32,
                frontend_layers=(1, 2, 3), freeze="none")


@dataclass
class SpearA2LConfig(TorchMethodConfig):
    frontend: str = "hubert"
    pretrained: Optional[str] = None  # hub name / local folder; None = tiny random front-end
    frontend_layers: tuple = (1, 2, 3)  # hidden-state indices stacked as channels (paper: 6, 12, 24)
    freeze: str = "none"  # front-end: none | feature_encoder | all
    fe_hidden: int = 48  # sizes of the random front-end (pretrained None only)
    fe_num_layers: int = 3
    fe_heads: int = 4
    fe_conv_dim: int = 32
    n_mfcc: int = 13  # mfcc front-end only
    d_model: int = 64
    heads: int = 4
    layers: int = 2
    ff: int = 128
    dropout: float = 0.1
    audio_channels: tuple = (16, 32, 64)
    landmark_channels: tuple = (16, 32, 64)
    pose_blocks: int = 1
    velocity_weight: float = 1.0  # eq. 7: L = L_mse + w * L_v (paper: 1)
    infer_hop: float = 0.5  # window hop at prediction, as a fraction of window_frames

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {**_TINY_TRAIN, **_TINY_NET, **_TINY_FE, "frontend": "hubert"},
        "paper": {**_PAPER_TRAIN, **_PAPER_NET, "frontend": "hubert", "pretrained": "facebook/hubert-large-ls960-ft",
                  "frontend_layers": (6, 12, 24), "freeze": "all"},
    }


@dataclass
class SpearA2LMFCCConfig(SpearA2LConfig):
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {**_TINY_TRAIN, **_TINY_NET, "frontend": "mfcc", "frontend_layers": ()},
        "paper": {**_PAPER_TRAIN, **_PAPER_NET, "frontend": "mfcc", "frontend_layers": ()},
    }


@dataclass
class SpearA2LConformerConfig(SpearA2LConfig):
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {**_TINY_TRAIN, **_TINY_NET, **_TINY_FE, "frontend": "wav2vec2_conformer"},
        "paper": {**_PAPER_TRAIN, **_PAPER_NET, "frontend": "wav2vec2_conformer",
                  "pretrained": "facebook/wav2vec2-conformer-rope-large-960h-ft",
                  "frontend_layers": (6, 12, 24), "freeze": "all"},
    }


@dataclass
class SpearA2LUniSpeechConfig(SpearA2LConfig):
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {**_TINY_TRAIN, **_TINY_NET, **_TINY_FE, "frontend": "unispeech"},
        "paper": {**_PAPER_TRAIN, **_PAPER_NET, "frontend": "unispeech", "pretrained": "microsoft/unispeech-large-1500h-cv",
                  "frontend_layers": (6, 12, 24), "freeze": "all"},
    }


def frontend_options(cfg: SpearA2LConfig) -> tuple[dict[str, Any], int]:
    """(options for `build_frontend`, number of stacked layers the features hold)."""
    if cfg.frontend == "mfcc":
        return {"n_mfcc": cfg.n_mfcc, "deltas": 2}, 1
    layers = [int(i) for i in cfg.frontend_layers] or None
    opts: dict[str, Any] = {"pretrained": cfg.pretrained, "layers": layers, "freeze": cfg.freeze}
    if cfg.pretrained is None:
        opts.update(hidden_size=cfg.fe_hidden, num_layers=cfg.fe_num_layers, num_heads=cfg.fe_heads,
                    conv_dim=cfg.fe_conv_dim)
    return opts, len(layers) if layers else 1


def fill_gaps(pose: np.ndarray) -> np.ndarray:
    """T x K with NaN rows (frames whose pose was not estimated) -> each component linearly
    interpolated from the nearest estimated frames (held at the ends); all NaN -> zeros."""
    pose = np.array(pose, dtype=np.float32)
    t = np.arange(len(pose))
    for k in range(pose.shape[1]):
        ok = np.isfinite(pose[:, k])
        if not ok.any():
            pose[:, k] = 0
        elif not ok.all():
            pose[~ok, k] = np.interp(t[~ok], t[ok], pose[ok, k])
    return pose


def relative_pose(pose: Optional[np.ndarray], num_frames: int) -> np.ndarray:
    """`pose - pose[0]` (T x 6, float32, gaps filled by `fill_gaps`); zeros when the dataset has no pose."""
    if pose is None:
        return np.zeros((num_frames, 6), np.float32)
    pose = fill_gaps(np.asarray(pose, dtype=np.float32)[:num_frames])
    return pose - pose[:1]


def pose_scale(clips: list[Clip]) -> np.ndarray:
    """Per-component std of the relative pose over the training frames (>= 1e-3; ones without pose)."""
    rel = [relative_pose(c.pose, c.num_frames) for c in clips if c.pose is not None]
    if not rel:
        return np.ones(6, np.float32)
    return np.maximum(np.concatenate(rel).std(axis=0), 1e-3).astype(np.float32)


def triangular_weights(length: int) -> np.ndarray:
    """Blend weights over a window: highest in the middle, positive at the ends."""
    i = np.arange(length)
    return np.minimum(i + 1, length - i).astype(np.float32)


class SpearModule(torch.nn.Module):
    """`SpearA2L` plus the pose normalisation it was trained with (a saved buffer)."""

    def __init__(self, net: SpearA2L, scale: np.ndarray) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("pose_scale", torch.as_tensor(np.asarray(scale, np.float32)))

    def forward(self, audio, pose_rel, reference):
        return self.net(audio, pose_rel / self.pose_scale, reference)


@register
class SpearA2LMethod(TorchMethod):
    name = "spear_a2l"
    ablations = ("spear_a2l_mfcc", "spear_a2l_wav2vec2_conformer", "spear_a2l_unispeech")  # Table 3
    description = ("SPEAR audio-to-landmark (HuBERT layers + residual 1D-CNN, pose and reference "
                   "encoders, transformer; MSE + velocity loss): jaw + mouth")
    inputs = frozenset({"audio", "identity_landmarks", "pose"})
    outputs = frozenset({"landmarks"})
    Config = SpearA2LConfig
    points = POINTS

    def __init__(self, config: Optional[SpearA2LConfig] = None) -> None:
        super().__init__(config)
        self._pose_scale = np.ones(6, np.float32)

    # -- model -------------------------------------------------------------------------
    def build_model(self) -> torch.nn.Module:
        cfg = self.config
        opts, stacked = frontend_options(cfg)
        frontend = build_frontend(cfg.frontend, opts)
        net = SpearA2L(frontend, frontend_layers=stacked, points=POINTS, d_model=cfg.d_model, heads=cfg.heads,
                       layers=cfg.layers, ff=cfg.ff, dropout=cfg.dropout, audio_channels=tuple(cfg.audio_channels),
                       landmark_channels=tuple(cfg.landmark_channels), pose_blocks=cfg.pose_blocks)
        return SpearModule(net, self._pose_scale)

    def fit(self, train: list[Clip], val: list[Clip], **kwargs) -> None:
        self._pose_scale = pose_scale(train)
        super().fit(train, val, **kwargs)

    # -- training ----------------------------------------------------------------------
    def make_batch(self, clips: list[Clip], rng: np.random.Generator, device,
                   starts=None) -> dict[str, torch.Tensor]:
        length, starts = crop_starts(clips, rng, self.window_length(clips[0].fps), starts)
        spf = samples_per_frame(clips[0])
        audio, pose, ref, target = [], [], [], []
        for clip, start in zip(clips, starts):
            ident = clip.landmarks[0].astype(np.float32)
            audio.append(frame_audio(clip.audio, spf, start, length))
            pose.append(relative_pose(clip.pose, clip.num_frames)[start:start + length])
            ref.append(landmarks_normalise(ident, ident))
            target.append(landmarks_normalise(clip.landmarks[start:start + length, POINTS].astype(np.float32), ident))
        as_t = lambda xs: torch.as_tensor(np.stack(xs), dtype=torch.float32, device=device)  # noqa: E731
        return {"audio": as_t(audio), "pose": as_t(pose), "reference": as_t(ref), "target": as_t(target)}

    def compute_loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        pred = model(batch["audio"], batch["pose"], batch["reference"])
        mse, vel = spear_loss(pred, batch["target"])
        return mse + self.config.velocity_weight * vel

    # -- inference ---------------------------------------------------------------------
    def infer(self, model: torch.nn.Module, inp: MethodInput, device) -> Prediction:
        cfg = self.config
        num = int(inp.num_frames)
        spf = inp.sample_rate / inp.fps
        if abs(spf - round(spf)) > 1e-6:
            raise ValueError(f"{self.name}: {inp.sample_rate} Hz is not a whole number of samples per frame")
        spf = int(round(spf))
        ident = np.asarray(inp.identity_landmarks, dtype=np.float32)
        rel = relative_pose(inp.pose, num)
        if len(rel) < num:
            raise ValueError(f"{self.name}: pose has {len(rel)} frames, the clip {num}")
        length = min(self.window_length(inp.fps), num)
        starts = window_starts(num, length, int(round(cfg.infer_hop * length)))
        ref = landmarks_normalise(ident, ident)
        total = np.zeros((num, len(POINTS), 2), np.float64)
        weight = np.zeros(num, np.float64)
        w = triangular_weights(length)
        for i in range(0, len(starts), max(1, cfg.batch_size)):
            chunk = starts[i:i + max(1, cfg.batch_size)]
            audio = torch.as_tensor(np.stack([frame_audio(inp.audio, spf, s, length) for s in chunk]), device=device)
            pose = torch.as_tensor(np.stack([rel[s:s + length] for s in chunk]), device=device)
            refs = torch.as_tensor(np.stack([ref] * len(chunk)), device=device)
            out = model(audio, pose, refs).float().cpu().numpy()
            for s, o in zip(chunk, out):
                total[s:s + length] += w[:, None, None] * o
                weight[s:s + length] += w
        norm = (total / weight[:, None, None]).astype(np.float32)
        pixels = landmarks_denormalise(norm, ident)
        return Prediction(inp.clip_id, landmarks=pixels.astype(np.float32), points=POINTS)

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        if "pose_scale" in state:
            self._pose_scale = np.asarray(state["pose_scale"], np.float32)
        super().set_state(state)


@register
class SpearA2LMFCC(SpearA2LMethod):
    name = "spear_a2l_mfcc"
    description = "SPEAR audio-to-landmark with an MFCC front-end (Table 3 ablation)"
    Config = SpearA2LMFCCConfig


@register
class SpearA2LConformer(SpearA2LMethod):
    name = "spear_a2l_wav2vec2_conformer"
    description = "SPEAR audio-to-landmark with a Wav2Vec2-Conformer front-end (Table 3 ablation)"
    Config = SpearA2LConformerConfig


@register
class SpearA2LUniSpeech(SpearA2LMethod):
    name = "spear_a2l_unispeech"
    description = "SPEAR audio-to-landmark with a UniSpeech front-end (Table 3 ablation)"
    Config = SpearA2LUniSpeechConfig


__all__ = ["POINTS", "SpearA2LConfig", "SpearA2LMethod", "SpearA2LMFCC", "SpearA2LConformer",
           "SpearA2LUniSpeech", "window_starts", "triangular_weights"]
