"""Hopenet head-pose network (Ruiz, Chong & Rehg 2018), the estimator FD2Talk and SadTalker name for
their Diversity metric (`reference/metrics.md` §3.2), as the ``hopenet`` pose backend.

Network. A ResNet-50 (torchvision's ``Bottleneck`` blocks, layers [3, 4, 6, 3]) whose pooled 2048-d
feature feeds three fully connected heads ``fc_yaw``, ``fc_pitch``, ``fc_roll`` of 66 bins each. The
official snapshot ``hopenet_robust_alpha1.pkl`` (natanielruiz/deep-head-pose, ``code/hopenet.py``) is
a plain ``torch.save(model.state_dict())``: keys ``conv1.*``, ``bn1.*``, ``layer1..4.*``, the three
heads, and ``fc_finetune.*`` (a "vestigial" Linear(2051, 3) from the authors' earlier experiments
that ``forward`` never uses). `HopenetModel` has exactly those modules so the file loads with
``strict=True``; ``fc_finetune`` is kept only for that. The reference pools with ``AvgPool2d(7)``,
which equals torchvision's adaptive average pool on the 7 x 7 map of a 224 x 224 input (the only
input size used here).

Angle decoding. Per head, degrees = Σ_i softmax(logits)_i · i · 3 − 99 over the bins i = 0..65 (the
bins are 3° wide and span −99°..+99°), as ``test_on_video_dlib.py``.

Crop (``test_on_video_dlib.py``, which takes its box from dlib's CNN face detector with confidence >
1). talkbench takes the box from 68-point landmarks instead (the bounding box of the points; the
points span brows to chin, about what dlib's detectors box): with width w and height h, the box is
widened by w/2 on the left and right, raised by 3h/4 at the top and lowered by h/4 at the bottom,
clipped to the frame, and cut out with integer coordinates (the reference ran under Python 2, where
these int divisions truncate; here the float bounds are truncated towards zero after clipping). The
crop is resized so its shorter side is 224 (PIL bilinear, torchvision's ``Resize(224)``, the
reference's ``Scale``), centre-cropped to 224 x 224, scaled to [0, 1] and normalised with the
ImageNet mean and std.

Angle convention. Hopenet's angles follow 300W-LP; reading its ``utils.draw_axis`` (the face's
forward axis is drawn at x = −sin(yaw), y = −cos(yaw)·sin(pitch)): positive Hopenet yaw turns the nose
to the image left and positive pitch tips it up; roll turns the face clockwise, as talkbench's. The
backend returns talkbench angles (`metrics.motion` docstring): yaw and pitch negated, roll as is.
Diversity and Beat Align do not depend on signs; `Clip.pose` written from this backend does.

Weights: `core.weights` entry ``hopenet`` (``$TALKBENCH_HOME/weights/hopenet_robust_alpha1.pkl`` or
``$TALKBENCH_WEIGHTS_HOPENET``). A missing file makes the metric unavailable with the download
command; nothing is downloaded here.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

import numpy as np

from core.errors import MetricError
from core.hashing import array_digest
from core.weights import load_state_dict_strict

NUM_BINS = 66
BIN_WIDTH_DEG = 3.0
BIN_OFFSET_DEG = 99.0
INPUT_SIZE = 224
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
WEIGHTS_NAME = "hopenet"


def _torch_model_class():
    """Build the nn.Module class lazily so importing this module does not import torch."""
    import torch
    from torch import nn
    from torchvision.models.resnet import Bottleneck, ResNet

    class HopenetModel(ResNet):
        """ResNet-50 trunk + three 66-bin heads; module names as the official state dict."""

        def __init__(self, num_bins: int = NUM_BINS) -> None:
            super().__init__(Bottleneck, [3, 4, 6, 3])
            del self.fc  # the ImageNet classifier is not part of Hopenet
            width = 512 * Bottleneck.expansion
            self.fc_yaw = nn.Linear(width, num_bins)
            self.fc_pitch = nn.Linear(width, num_bins)
            self.fc_roll = nn.Linear(width, num_bins)
            self.fc_finetune = nn.Linear(width + 3, 3)  # vestigial in the official file; unused

        def forward(self, x: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor", "torch.Tensor"]:
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            x = torch.flatten(self.avgpool(x), 1)
            return self.fc_yaw(x), self.fc_pitch(x), self.fc_roll(x)

    return HopenetModel


def build_model():
    """An uninitialised-weights Hopenet (random init) with the official module layout."""
    return _torch_model_class()()


def bins_to_degrees(logits: np.ndarray) -> np.ndarray:
    """Softmax expectation over the 66 bins, × 3 − 99 degrees (last axis = bins)."""
    z = np.asarray(logits, dtype=np.float64)
    if z.shape[-1] != NUM_BINS:
        raise ValueError(f"expected {NUM_BINS} bins on the last axis, got shape {z.shape}")
    z = z - z.max(axis=-1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=-1, keepdims=True)
    return (p * np.arange(NUM_BINS)).sum(axis=-1) * BIN_WIDTH_DEG - BIN_OFFSET_DEG


def crop_box(points: np.ndarray, width: int, height: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the Hopenet crop around 68 (or any) landmark points (module docstring)."""
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or not np.isfinite(pts).all() or len(pts) < 2:
        raise ValueError(f"landmarks must be a finite P x 2 array (P >= 2), got shape {pts.shape}")
    x0, y0 = pts.min(axis=0)
    x1, y1 = pts.max(axis=0)
    w, h = x1 - x0, y1 - y0
    x0, x1 = x0 - w / 2.0, x1 + w / 2.0
    y0, y1 = y0 - 3.0 * h / 4.0, y1 + h / 4.0
    box = (int(max(x0, 0.0)), int(max(y0, 0.0)), int(min(x1, width)), int(min(y1, height)))
    if box[2] - box[0] < 2 or box[3] - box[1] < 2:
        raise ValueError(f"the face box {box} is empty inside the {width} x {height} frame")
    return box


def preprocess(frame: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """3 x 224 x 224 float32 network input: crop, shorter side to 224, centre crop, ImageNet norm."""
    from PIL import Image

    x0, y0, x1, y1 = box
    crop = Image.fromarray(np.ascontiguousarray(frame[y0:y1, x0:x1]))
    w, h = crop.size
    # torchvision Resize(int): the shorter side becomes 224, the other keeps the aspect ratio
    # (truncated, as torchvision's _compute_resized_output_size).
    if w <= h:
        size = (INPUT_SIZE, int(INPUT_SIZE * h / w))
    else:
        size = (int(INPUT_SIZE * w / h), INPUT_SIZE)
    crop = crop.resize(size, Image.BILINEAR)
    # CenterCrop: torchvision rounds the offset: int(round((dim - 224) / 2)).
    left = int(round((size[0] - INPUT_SIZE) / 2.0))
    top = int(round((size[1] - INPUT_SIZE) / 2.0))
    arr = np.asarray(crop, dtype=np.float32)[top:top + INPUT_SIZE, left:left + INPUT_SIZE] / 255.0
    arr = (arr - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def hopenet_to_talkbench(angles: np.ndarray) -> np.ndarray:
    """Hopenet (yaw, pitch, roll) -> talkbench's convention: yaw and pitch negated (docstring)."""
    out = np.array(angles, dtype=np.float64, copy=True)
    out[..., 0] *= -1.0
    out[..., 1] *= -1.0
    return out


def load_model(path: Optional[Path] = None, device: str = "cpu"):
    """Hopenet with the official snapshot loaded (strict keys), in eval mode.

    `path` None resolves the registry entry (MetricUnavailable with the download command when the
    file is missing)."""
    from core.weights import resolve

    path = resolve(WEIGHTS_NAME, path)
    model = load_state_dict_strict(build_model(), path, WEIGHTS_NAME, "hopenet_robust_alpha1.pkl")
    return model.to(device)


class HopenetEstimator:
    """Frames + landmarks in, per-frame (yaw, pitch, roll) in talkbench degrees out."""

    def __init__(self, weights: Optional[Path] = None, device: str = "cpu", batch_size: int = 32):
        self.weights = weights
        self.device = device
        self.batch_size = batch_size
        self._model: Any = None
        self._sha256 = ""

    def model(self):
        if self._model is None:
            from core.hashing import fingerprint
            from core.weights import resolve

            path = resolve(WEIGHTS_NAME, self.weights)
            self._sha256 = fingerprint(path)
            self._model = _shared_model(str(path), self._sha256)
        return self._model.to(self.device)

    def raw_logits(self, inputs: np.ndarray) -> np.ndarray:
        """N x 3 x 66 head logits (yaw, pitch, roll) of N x 3 x 224 x 224 inputs."""
        import torch

        model = self.model()
        outs = []
        with torch.no_grad():
            for i in range(0, len(inputs), self.batch_size):
                x = torch.from_numpy(inputs[i:i + self.batch_size]).to(self.device)
                outs.append(torch.stack(model(x), dim=1).float().cpu().numpy())
        return np.concatenate(outs) if outs else np.zeros((0, 3, NUM_BINS), dtype=np.float32)

    def angles(self, frames: np.ndarray, landmarks: np.ndarray,
               usable: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
        """(T x 3 degrees, ok (T,)): frames T x H x W x 3 uint8, landmarks T x P x 2 pixels.

        Frames not `usable`, or whose landmarks are not finite, are NaN and not ok."""
        frames = np.asarray(frames)
        lmk = np.asarray(landmarks, dtype=np.float64)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise MetricError(f"Hopenet needs uint8 T x H x W x 3 frames, got {frames.dtype} "
                              f"{frames.shape}")
        t, h, w = frames.shape[:3]
        if lmk.ndim != 3 or lmk.shape[0] != t or lmk.shape[2] != 2:
            raise MetricError(f"landmarks have shape {lmk.shape}, expected {t} x P x 2")
        if usable is not None and np.shape(usable) != (t,):
            raise MetricError(f"frame mask has shape {np.shape(usable)}, expected ({t},)")
        ok = np.ones(t, dtype=bool) if usable is None else np.asarray(usable, dtype=bool).copy()
        ok &= np.isfinite(lmk).all(axis=(1, 2))
        # Diversity and BeatAlign of one clip ask for the same angles: run the network once.
        self.model()
        key = (self._sha256, array_digest(frames, lmk, ok))
        if key in _ANGLES:
            _ANGLES.move_to_end(key)
            angles, ok = _ANGLES[key]
            return angles.copy(), ok.copy()
        inputs, rows = [], []
        for i in np.flatnonzero(ok):
            try:
                box = crop_box(lmk[i], w, h)
            except ValueError:
                ok[i] = False
                continue
            inputs.append(preprocess(frames[i], box))
            rows.append(i)
        angles = np.full((t, 3), np.nan)
        if rows:
            logits = self.raw_logits(np.stack(inputs))
            angles[rows] = hopenet_to_talkbench(bins_to_degrees(logits))
        _ANGLES[key] = (angles.copy(), ok.copy())
        while len(_ANGLES) > ANGLE_CACHE_SIZE:
            _ANGLES.popitem(last=False)
        return angles, ok


@lru_cache(maxsize=2)
def _shared_model(path: str, sha256: str):
    """One loaded network per weights file (keyed by content too: a rewritten file reloads),
    shared by every estimator and so by both metrics."""
    return load_model(Path(path))


ANGLE_CACHE_SIZE = 8
_ANGLES: "OrderedDict[tuple, tuple[np.ndarray, np.ndarray]]" = OrderedDict()


def frames_landmarks(pair, extractor_name: str = "dlib") -> tuple[np.ndarray, np.ndarray,
                                                                  Optional[np.ndarray]]:
    """Frames of the prediction and 68 landmarks found on them, with a usable mask.

    The landmarks the runner detected on the predicted frames (``meta["landmark_source"] ==
    "detected"``) are reused; otherwise (predicted landmarks describe the method's intent, not
    where the face is in its frames) the dlib extractor is run on the frames."""
    from faces.extractors import build_extractor

    frames = pair.pred.get("frames")
    if frames is None:
        raise MetricError("pose_backend 'hopenet' needs the prediction's 'frames'")
    lmk = pair.pred.get("landmarks")
    if (pair.meta.get("landmark_source") == "detected" and lmk is not None
            and tuple(pair.points) == tuple(range(68))):
        return np.asarray(frames), np.asarray(lmk), pair.frame_mask
    found = build_extractor(extractor_name).detect(np.asarray(frames))
    return np.asarray(frames), found.landmarks, found.found

