"""Lip-sync metrics with SyncNet: LSE-D, LSE-C and the AV offset (`reference/metrics.md` §1).

The reference is joonson/syncnet_python (``SyncNetModel.py`` class ``S``, ``SyncNetInstance.py``
``evaluate`` and ``calc_pdist``, ``run_pipeline.py`` for the face crop) as used by Wav2Lip's
``evaluation/scores_LSE`` scripts. This module is written from the prose description of those
files; no code is copied.

Network (class `SyncNet`, alias `S`)
------------------------------------
Two streams that map 0.2 s of audio and 0.2 s of video to 1024-d embeddings (NOT L2-normalised).
Submodule names and Sequential indices equal the original's, so the official ``syncnet_v2.model``
(a dict of tensors keyed ``netcnnaud.0.weight`` ... ``netfclip.3.bias``) loads with
``load_state_dict(strict=True)``. ReLUs and pools have no parameters but keep their index slots.

* ``netcnnaud`` (2-D, input N x 1 x 13 x 20: 13 MFCCs x 20 MFCC frames):
  0 conv 1->64 3x3 pad 1, 1 BN, 2 ReLU, 3 maxpool 1x1 stride 1 (an identity slot);
  4 conv 64->192 3x3 pad 1, 5 BN, 6 ReLU, 7 maxpool 3x3 stride (1,2)        -> 11 x 9;
  8 conv 192->384 3x3 pad 1, 9 BN, 10 ReLU;
  11 conv 384->256 3x3 pad 1, 12 BN, 13 ReLU;
  14 conv 256->256 3x3 pad 1, 15 BN, 16 ReLU, 17 maxpool 3x3 stride 2      -> 5 x 4;
  18 conv 256->512 kernel (5,4) no pad, 19 BN, 20 ReLU                       -> 1 x 1.
* ``netcnnlip`` (3-D, input N x 3 x 5 x 224 x 224, BGR 0-255):
  0 conv 3->96 kernel (5,7,7) stride (1,2,2) no pad, 1 BN, 2 ReLU,
  3 maxpool (1,3,3) stride (1,2,2)                                           -> 1 x 54 x 54;
  4 conv 96->256 (1,5,5) stride (1,2,2) pad (0,1,1), 5 BN, 6 ReLU,
  7 maxpool (1,3,3) stride (1,2,2) pad (0,1,1)                               -> 1 x 13 x 13;
  8, 11, 14 conv 256->256 (1,3,3) pad (0,1,1), each + BN + ReLU (9-10, 12-13, 15-16);
  17 maxpool (1,3,3) stride (1,2,2)                                          -> 1 x 6 x 6;
  18 conv 256->512 (1,6,6) no pad, 19 BN, 20 ReLU                            -> 1 x 1 x 1.
* ``netfcaud`` and ``netfclip``: 0 linear 512->512, 1 BN1d, 2 ReLU, 3 linear 512->1024.

Where the choices come from: the 5-frame (5,7,7)/(1,2,2) first lip convolution and the 512->512->1024
FC stacks are stated in metrics.md §1.1; the remaining kernels, strides, paddings, pools and the
BN after every convolution and after the first linear layer are those of ``SyncNetModel.py``
(checked against public copies of that file). They are also the only ones that make the shapes
close: the audio stream must end at 1 x 1 from 13 x 20 and the lip stream at 1 x 1 x 1 from
5 x 224 x 224 so that the flattened feature has the 512 entries the first linear layer takes
(`tests/test_metrics_syncnet.py` checks both). The official file predates BatchNorm's
``num_batches_tracked`` buffer; torch fills a missing one in on load (BN state version < 2), so
strict loading accepts the file with or without those entries.

Evaluation (`evaluate`, metrics.md §1.2)
----------------------------------------
* Video: 25 fps, each frame a 224 x 224 BGR uint8 crop, cast to float 0-255 with no normalisation,
  laid out N x 3 x 5 x 224 x 224 per window.
* Audio: 16 kHz mono converted to int16 the way ffmpeg writes ``pcm_s16le`` from float
  (x * 32768, rounded to nearest even, clipped: `audio_to_int16`), then
  ``python_speech_features.mfcc(audio_int16, 16000)`` with the package defaults (13 cepstra, 25 ms
  window, 10 ms hop, 26 filters, nfft 512, pre-emphasis 0.97, lifter 22, c0 = log energy), transposed
  to 13 x M. 100 MFCC frames per second against 25 video frames: 4 per video frame.
* ``min_length = min(T, floor(n_samples / 640))``; windows i = 0 .. min_length - 6 (the reference's
  ``range(0, min_length - 5)``, which drops one usable window at the end). Window i: frames i..i+4,
  MFCC columns 4i .. 4i+19. A clip needs min_length >= 6, i.e. 6 frames and 3840 samples (0.24 s).
* Distances (``calc_pdist``): the audio embeddings are padded with `vshift` zero rows at both ends;
  dist[i, k] = ||v_i - a_(i+k-vshift) + 1e-6|| (``pairwise_distance``, eps added to the difference) for
  k = 0 .. 2 vshift, the zero rows taking part at the edges. mean over i gives mdist[k];
  **LSE-D** = min_k mdist, **offset** = vshift - argmin_k, **LSE-C** = median_k mdist - LSE-D.
  Offset sign: the video window i matches best the audio window i - offset, so a positive offset
  means the audio leads the video (the sound of a mouth shape is heard `offset` frames before it is
  seen); 0 is in sync, +-1 is usually accepted. The frame-wise confidence (median of mdist minus
  dist[i, argmin], 9-tap median filter) is computed too (the reference only prints it).
* Windows are embedded `batch_size` at a time on the metric's device (20 on CPU as in the
  reference, 128 on CUDA; the batch does not change the value beyond float rounding). Distances are
  computed on the device in float32 as in the reference (torch ``pairwise_distance``, one call per
  offset over all windows instead of one call per window).

Crops (parameter ``crop``)
--------------------------
* ``"syncnet"`` (default): the ``run_pipeline.py`` crop (metrics.md §1.3) on per-frame boxes taken
  from the clip's reference landmarks (``pair.ref["landmarks"]``): box = bounding box of the 68
  points, s = max(w, h) / 2, centre (cx, cy). s, cx and cy are median-filtered over time with
  ``scipy.signal.medfilt`` kernel 13 -- the reference's call, which pads with zeros, so the first and
  last 6 frames take the median of a window holding zeros (for a face whose box barely moves this
  picks the smallest real value of the window). The frame is padded by ``int(s (1 + 2 cs))`` pixels of
  value 110 on every side and the crop is rows [int(cy' - s), int(cy' + s (1 + 2 cs))), columns
  [int(cx' - s (1 + cs)), int(cx' + s (1 + cs))) in padded coordinates (cx' = cx + pad, cy' = cy +
  pad; numpy slicing as in the reference), cs = ``crop_scale`` = 0.4, resized to 224 x 224 with
  ``cv2.resize`` (bilinear). The same boxes crop the prediction and the ground truth, so both are
  scored through the identical path. Frames whose reference landmarks are unusable (``frame_mask``
  False, or not finite) get boxes linearly interpolated from the usable frames (the reference
  interpolates its track boxes between detections). If the reference frames are present and their
  size differs from the prediction's, the boxes are scaled to the prediction's pixel grid.
* ``"full"``: the whole frame resized to 224 x 224 (Wav2Lip's ``calculate_scores_LRS.py`` path).

Deviations from the reference, all documented: the boxes come from the 68 landmarks instead of S3FD
detections (a landmark box runs from the brows to the chin, an S3FD box from the forehead to the
chin, so s is smaller and the crop sits a little lower and tighter); there is no shot detection,
tracking, ``min_track`` or ``min_face_size`` (the clip is one track); the crops are not round-tripped
through XVID and JPEG; clips with 6 frames (the shortest scoreable) cannot go through the 13-tap
zero-padded median filter meaningfully, so the syncnet crop needs 7 frames.

Metrics
-------
``LSE-D`` (lower is better), ``LSE-C`` (higher is better) and ``AV-offset`` (|offset| in frames,
lower is better) are clip-level and need the predicted frames; the set value is the mean over clips
(Wav2Lip's ``calculate_scores_LRS.py``). They share one evaluation per clip: the result is kept in a
bounded module-level LRU cache keyed by the weights' sha256, the evaluation parameters and digests of
the prediction frames, the audio and the crop boxes. The network itself is shared the same way.

Parameters: ``crop`` ("syncnet" | "full"), ``crop_scale`` (0.4), ``vshift`` (15), ``weights``
(registry name, default ``syncnet_v2``; or ``syncnet_expert``: the network trained on the
protocol's own train split by bench/experts.py, loaded from the expert checkpoint passed as
``weights_path`` -- same layer list at a reduced width saved in its config -- and scored by the
unchanged evaluation), ``weights_path`` (an explicit file or folder, optional),
``batch_size`` (None: 20 on CPU, 128 on CUDA; not part of the metric's identity).

Failures: fps other than 25 (the reference assumes 25 fps), a sample rate other than 16 kHz, too few
frames or too little audio for one window -> `MetricError`; weights missing -> `MetricUnavailable`
naming ``talkbench weights download syncnet_v2`` (raised when the metric is built).
"""

from __future__ import annotations

import io
import logging
import math
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional, Protocol

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy.signal import medfilt

from core import weights
from core.constants import SAMPLE_RATE
from core.errors import MetricError, MetricUnavailable, short_error
from core.hashing import array_digest
from core.types import ClipPair
from faces.crops import CROP_SCALE, Boxes, crop_face, landmark_boxes, smooth_boxes
from metrics import register
from metrics.base import Metric

log = logging.getLogger(__name__)

FPS = 25
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640
MFCC_PER_FRAME = 4  # 100 Hz MFCC / 25 fps
FRAMES_PER_WINDOW = 5
MFCC_PER_WINDOW = MFCC_PER_FRAME * FRAMES_PER_WINDOW  # 20
NUM_CEPSTRA = 13
CROP_SIZE = 224
FRAME_CONF_KERNEL = 9
DIST_EPS = 1e-6
VSHIFT = 15
CROPS = ("syncnet", "full")
EMBEDDING_DIM = 1024
MIN_FRAMES_SYNCNET_CROP = 7
CPU_BATCH, CUDA_BATCH = 20, 128
RESULT_CACHE_SIZE = 64


# ----------------------------------------------------------------------------------- network
class SyncNet(nn.Module):
    """joonson's SyncNet ``S``: `forward_aud` (N x 1 x 13 x 20) and `forward_lip`
    (N x 3 x 5 x 224 x 224) -> N x 1024 embeddings. Layer list: see the module docstring."""

    def __init__(self, embedding_dim: int = EMBEDDING_DIM, width: float = 1.0) -> None:
        super().__init__()
        # `width` scales every channel count (talkbench's SyncNet experts train a narrow copy of
        # the same layer list on CPU, bench/experts.py); width 1 is the official network.
        if not (isinstance(width, (int, float)) and 0 < width <= 1):
            raise ValueError(f"SyncNet width must be in (0, 1], got {width!r}")
        self.width, self.embedding_dim = float(width), int(embedding_dim)

        def ch(n: int) -> int:
            return max(1, int(round(n * width)))

        def conv2d(cin: int, cout: int, kernel, pad) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, kernel, stride=1, padding=pad), nn.BatchNorm2d(cout),
                    nn.ReLU(inplace=True)]

        def conv3d(cin: int, cout: int, kernel, stride, pad) -> list[nn.Module]:
            return [nn.Conv3d(cin, cout, kernel, stride=stride, padding=pad), nn.BatchNorm3d(cout),
                    nn.ReLU(inplace=True)]

        def fc(dim: int) -> nn.Sequential:
            return nn.Sequential(nn.Linear(ch(512), ch(512)), nn.BatchNorm1d(ch(512)), nn.ReLU(),
                                 nn.Linear(ch(512), dim))

        self.netcnnaud = nn.Sequential(
            *conv2d(1, ch(64), (3, 3), (1, 1)),                      # 0-2
            nn.MaxPool2d((1, 1), stride=(1, 1)),                 # 3
            *conv2d(ch(64), ch(192), (3, 3), (1, 1)),                    # 4-6
            nn.MaxPool2d((3, 3), stride=(1, 2)),                 # 7
            *conv2d(ch(192), ch(384), (3, 3), (1, 1)),                   # 8-10
            *conv2d(ch(384), ch(256), (3, 3), (1, 1)),                   # 11-13
            *conv2d(ch(256), ch(256), (3, 3), (1, 1)),                   # 14-16
            nn.MaxPool2d((3, 3), stride=(2, 2)),                 # 17
            *conv2d(ch(256), ch(512), (5, 4), (0, 0)),                   # 18-20
        )
        self.netfcaud = fc(embedding_dim)
        self.netfclip = fc(embedding_dim)
        self.netcnnlip = nn.Sequential(
            *conv3d(3, ch(96), (5, 7, 7), (1, 2, 2), 0),             # 0-2
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2)),           # 3
            *conv3d(ch(96), ch(256), (1, 5, 5), (1, 2, 2), (0, 1, 1)),   # 4-6
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),  # 7
            *conv3d(ch(256), ch(256), (1, 3, 3), 1, (0, 1, 1)),          # 8-10
            *conv3d(ch(256), ch(256), (1, 3, 3), 1, (0, 1, 1)),          # 11-13
            *conv3d(ch(256), ch(256), (1, 3, 3), 1, (0, 1, 1)),          # 14-16
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2)),           # 17
            *conv3d(ch(256), ch(512), (1, 6, 6), 1, 0),                  # 18-20
        )

    def forward_aud(self, x: torch.Tensor) -> torch.Tensor:
        mid = self.netcnnaud(x)
        return self.netfcaud(mid.reshape(mid.shape[0], -1))

    def forward_lip(self, x: torch.Tensor) -> torch.Tensor:
        mid = self.netcnnlip(x)
        return self.netfclip(mid.reshape(mid.shape[0], -1))


S = SyncNet  # the original's class name


class Embedder(Protocol):
    def forward_aud(self, x: torch.Tensor) -> torch.Tensor: ...

    def forward_lip(self, x: torch.Tensor) -> torch.Tensor: ...


# A talkbench SyncNet expert checkpoint (bench/experts.py): a torch-saved dict
# {"format": EXPERT_FORMAT, "config": {...}, "state_dict": {...}}; the architecture keys of the
# config (`EXPERT_ARCH_KEYS`) rebuild the narrow network. Official files are bare state dicts.
EXPERT_FORMAT = "talkbench-syncnet-expert-v1"
EXPERT_ARCH_KEYS = ("width", "embedding_dim")


def save_expert(path: Path | str, model: SyncNet, config: dict[str, Any]) -> None:
    """Write an expert checkpoint atomically (temporary file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arch = {"width": model.width, "embedding_dim": model.embedding_dim}
    for key, value in arch.items():
        if key in config and config[key] != value:
            raise ValueError(f"expert config says {key}={config[key]!r} but the network has {value!r}")
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    # Saved to memory first: torch.save names the zip's root folder after the file, so writing to
    # the file directly would make the bytes (and sha256) depend on the file name.
    buffer = io.BytesIO()
    torch.save({"format": EXPERT_FORMAT, "config": {**config, **arch}, "state_dict": state}, buffer)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(buffer.getvalue())
    tmp.replace(path)


def read_expert_config(path: Path | str) -> dict[str, Any]:
    """The config saved with an expert checkpoint (MetricUnavailable if `path` is not one)."""
    blob = _torch_load(Path(path))
    if not (isinstance(blob, dict) and blob.get("format") == EXPERT_FORMAT):
        raise MetricUnavailable(f"{path} is not a talkbench SyncNet expert checkpoint")
    return dict(blob["config"])


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated or foreign file
        raise MetricUnavailable(f"{path} cannot be read as a SyncNet state dict ({short_error(exc)}); "
                                f"check it with `talkbench weights verify`") from exc


def load_syncnet(path: Path | str) -> SyncNet:
    """A `SyncNet` in eval mode with the state dict in `path` loaded strictly.

    The file is a torch-saved dict of tensors under the original module names (``syncnet_v2.model``
    and files saved with ``torch.save(model.state_dict())``), built at width 1 -- or a talkbench
    expert checkpoint (`save_expert`), whose saved config gives the width and embedding size.
    MetricUnavailable if it cannot be read or does not match the architecture.
    """
    path = Path(path)
    state = _torch_load(path)
    arch: dict[str, Any] = {}
    if isinstance(state, dict) and state.get("format") == EXPERT_FORMAT:
        config = state.get("config")
        if not isinstance(config, dict) or any(k not in config for k in EXPERT_ARCH_KEYS):
            raise MetricUnavailable(f"{path}: expert checkpoint without {list(EXPERT_ARCH_KEYS)} "
                                    f"in its config")
        arch = {k: config[k] for k in EXPERT_ARCH_KEYS}
        state = state.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise MetricUnavailable(f"{path} is not a dict of tensors (a SyncNet state dict expected)")
    try:
        model = SyncNet(**arch)
    except (TypeError, ValueError) as exc:
        raise MetricUnavailable(f"{path}: bad expert architecture {arch} ({exc})") from exc
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        where = f" at {arch}" if arch else ""
        raise MetricUnavailable(f"{path} does not match the SyncNet architecture{where} "
                                f"({short_error(exc, 500)})") from exc
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


# ----------------------------------------------------------------------------------- audio
def audio_to_int16(audio: np.ndarray) -> np.ndarray:
    """Float audio in [-1, 1] -> int16 as ffmpeg's float-to-s16 conversion: x * 32768, rounded to
    nearest (ties to even), clipped to [-32768, 32767]. int16 input is returned as is."""
    audio = np.asarray(audio)
    if audio.dtype == np.int16:
        return audio
    if not np.issubdtype(audio.dtype, np.floating):
        raise MetricError(f"audio has dtype {audio.dtype}; expected float in [-1, 1] or int16")
    return np.clip(np.rint(audio.astype(np.float64) * 32768.0), -32768, 32767).astype(np.int16)


def mfcc_features(audio_int16: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """13 x M MFCC "image" (float32): ``python_speech_features.mfcc`` with its defaults, transposed."""
    import python_speech_features

    feats = python_speech_features.mfcc(audio_int16, sample_rate)
    return np.ascontiguousarray(feats.T, dtype=np.float32)


def num_windows(n_frames: int, n_samples: int) -> int:
    """Number of 5-frame windows the reference evaluates: min(T, floor(N / 640)) - 5 (may be <= 0)."""
    return min(int(n_frames), int(n_samples) // SAMPLES_PER_FRAME) - FRAMES_PER_WINDOW


def syncnet_crops(frames: np.ndarray, boxes: Boxes, crop_scale: float = CROP_SCALE) -> np.ndarray:
    """T x 224 x 224 x C crops of T x H x W x C uint8 frames with (already smoothed) boxes."""
    out = np.empty((len(frames), CROP_SIZE, CROP_SIZE, frames.shape[-1]), dtype=np.uint8)
    for t, frame in enumerate(frames):
        if not boxes.s[t] >= 1.0:
            raise MetricError(f"the face box of frame {t} has half-size {boxes.s[t]:.3g} px; "
                              f"nothing to crop")
        face = crop_face(frame, boxes.cx[t], boxes.cy[t], boxes.s[t], crop_scale)
        if face.shape[0] < 1 or face.shape[1] < 1:
            raise MetricError(f"the face box of frame {t} lies outside the frame")
        out[t] = cv2.resize(np.ascontiguousarray(face), (CROP_SIZE, CROP_SIZE)).reshape(out[t].shape)
    return out


def full_frames(frames: np.ndarray) -> np.ndarray:
    """Whole frames resized to 224 x 224 (``cv2.resize`` bilinear), as the Wav2Lip LRS script."""
    out = np.empty((len(frames), CROP_SIZE, CROP_SIZE, frames.shape[-1]), dtype=np.uint8)
    for t, frame in enumerate(frames):
        out[t] = cv2.resize(np.ascontiguousarray(frame), (CROP_SIZE, CROP_SIZE)).reshape(out[t].shape)
    return out


# ----------------------------------------------------------------------------------- evaluation
@dataclass
class SyncResult:
    offset: int  # vshift - argmin; > 0: the audio leads the video
    min_dist: float  # LSE-D
    conf: float  # LSE-C
    mean_dists: np.ndarray  # (2 vshift + 1,) mean distance per offset index k
    frame_conf: np.ndarray  # (n_windows,) median(mdist) - dist[i, argmin], 9-tap median filtered
    n_windows: int


def embed(model: Embedder, video: np.ndarray, mfcc: np.ndarray, n: int, batch_size: int,
          device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings (n x D each, on `device`) of windows 0..n-1.

    `video`: T x 224 x 224 x 3 BGR uint8 (T >= n + 4); `mfcc`: 13 x M (M >= 4 (n - 1) + 20).
    Window i = frames i..i+4 as 3 x 5 x H x W float 0-255, MFCC columns 4i..4i+19 as 1 x 13 x 20.
    """
    if n < 1:
        raise ValueError("no window to embed")
    if len(video) < n + FRAMES_PER_WINDOW - 1:
        raise ValueError(f"{len(video)} frames cannot hold {n} windows")
    if mfcc.shape[1] < MFCC_PER_FRAME * (n - 1) + MFCC_PER_WINDOW:
        raise ValueError(f"{mfcc.shape[1]} MFCC frames cannot hold {n} windows")
    cc = torch.from_numpy(np.ascontiguousarray(mfcc, dtype=np.float32))
    vid_out, aud_out = [], []
    with torch.no_grad():
        for start in range(0, n, batch_size):
            stop = min(n, start + batch_size)
            clip = torch.from_numpy(np.ascontiguousarray(
                video[start:stop + FRAMES_PER_WINDOW - 1])).to(device=device, dtype=torch.float32)
            # T' x H x W x 3 -> 3 x T' x H x W -> windows: 3 x B x H x W x 5 -> B x 3 x 5 x H x W
            clip = clip.permute(3, 0, 1, 2).unfold(1, FRAMES_PER_WINDOW, 1)
            lip_in = clip.permute(1, 0, 4, 2, 3).contiguous()
            vid_out.append(model.forward_lip(lip_in))
            cols = cc[:, MFCC_PER_FRAME * start:MFCC_PER_FRAME * (stop - 1) + MFCC_PER_WINDOW]
            aud_in = cols.unfold(1, MFCC_PER_WINDOW, MFCC_PER_FRAME)  # 13 x B x 20
            aud_in = aud_in.permute(1, 0, 2).unsqueeze(1).contiguous().to(device)
            aud_out.append(model.forward_aud(aud_in))
    return torch.cat(vid_out), torch.cat(aud_out)


def offset_distances(vid: torch.Tensor, aud: torch.Tensor, vshift: int = VSHIFT) -> torch.Tensor:
    """n x (2 vshift + 1): dist[i, k] = ||vid_i - audpad_(i+k) + eps||, audpad = aud with vshift
    zero rows before and after (``calc_pdist``)."""
    n = vid.shape[0]
    audp = F.pad(aud, (0, 0, vshift, vshift))
    return torch.stack([F.pairwise_distance(vid, audp[k:k + n], p=2.0, eps=DIST_EPS)
                        for k in range(2 * vshift + 1)], dim=1)


def sync_scores(dists: torch.Tensor, vshift: int = VSHIFT) -> SyncResult:
    """Offset, LSE-D, LSE-C (and frame-wise confidence) from n x (2 vshift + 1) distances."""
    mdist = dists.mean(dim=0)
    minval, minidx = torch.min(mdist, 0)
    med = torch.median(mdist)
    conf = med - minval
    fconf = (med - dists[:, minidx]).double().cpu().numpy()
    return SyncResult(offset=int(vshift - int(minidx)), min_dist=float(minval), conf=float(conf),
                      mean_dists=mdist.double().cpu().numpy(),
                      frame_conf=_medfilt(fconf, FRAME_CONF_KERNEL),
                      n_windows=int(dists.shape[0]))


def _medfilt(x: np.ndarray, kernel: int) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*kernel_size exceeds volume extent.*")
        return medfilt(x, kernel_size=kernel)


def evaluate(model: Embedder, video: np.ndarray, audio: np.ndarray, vshift: int = VSHIFT,
             batch_size: int = CPU_BATCH, device: str | torch.device = "cpu",
             sample_rate: int = SAMPLE_RATE) -> SyncResult:
    """SyncInstance.evaluate on prepared 25 fps video (T x 224 x 224 x 3 BGR uint8) and 16 kHz audio
    (float in [-1, 1] or int16). MetricError if the clip is too short for one window."""
    audio16 = audio_to_int16(audio)
    n = num_windows(len(video), len(audio16))
    if n < 1:
        raise MetricError(_too_short(len(video), len(audio16)))
    mfcc = mfcc_features(audio16, sample_rate)
    vid, aud = embed(model, video, mfcc, n, batch_size, device)
    with torch.no_grad():
        return sync_scores(offset_distances(vid, aud, vshift), vshift)


def _too_short(n_frames: int, n_samples: int) -> str:
    need = FRAMES_PER_WINDOW + 1
    usable = min(n_frames, n_samples // SAMPLES_PER_FRAME)
    if n_frames < need:
        why = f"{n_frames} frames"
    else:
        why = f"{n_samples} audio samples ({n_samples / SAMPLE_RATE:.3f} s, {usable} frames' worth)"
    return (f"clip too short for SyncNet: {why}; one 5-frame window needs {need} frames and "
            f"{need * SAMPLES_PER_FRAME} samples of 16 kHz audio (the reference evaluates "
            f"min(frames, samples // 640) - 5 windows)")


# ----------------------------------------------------------------------------------- shared state
@lru_cache(maxsize=2)
def _shared_model(path: str, sha256: str) -> SyncNet:
    """One loaded network per weights file (LSE-D, LSE-C and AV-offset share it)."""
    return load_syncnet(path)


_RESULTS: "OrderedDict[tuple, SyncResult]" = OrderedDict()


def clear_cache() -> None:
    _RESULTS.clear()




# ----------------------------------------------------------------------------------- metrics
# `weights: syncnet_expert` names the SyncNet expert trained on the protocol's own train split
# (bench/experts.py). It is not a download: `talkbench run/score/sanity` train it when missing and
# pass its checkpoint as `weights_path`; without one the metric is unavailable with the command.
EXPERT_WEIGHTS = "syncnet_expert"


def _expert_file(path: Optional[Any]) -> Path:
    command = "`talkbench experts train syncnet --protocol <protocol>`"
    if path is None:
        raise MetricUnavailable(f"the protocol's SyncNet expert is not trained here; train it with "
                                f"{command} (`talkbench run` does it when missing)")
    path = Path(path)
    if not path.is_file():
        raise MetricUnavailable(f"SyncNet expert checkpoint {path} missing; train it with {command}")
    read_expert_config(path)  # refuse an official or foreign file early, with a clear message
    return path


class _SyncNetMetric(Metric):
    needs = ("frames",)
    level = "clip"
    defaults: dict[str, Any] = {"crop": "syncnet", "crop_scale": CROP_SCALE, "vshift": VSHIFT,
                                "weights": "syncnet_v2", "weights_path": None, "batch_size": None}

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        if self.params["weights"] == EXPERT_WEIGHTS:
            self.weights_file = _expert_file(self.params["weights_path"])
        else:
            try:
                self.weights_file = weights.resolve(self.params["weights"], self.params["weights_path"])
            except KeyError as exc:  # not a registered name: a protocol error
                raise ValueError(f"metric {self.name}: parameter 'weights': {exc.args[0]}") from None
        self.weights_sha256 = weights.fingerprint(self.weights_file)
        self._model = _shared_model(str(Path(self.weights_file).resolve()), self.weights_sha256)
        self.calls = 0  # network evaluations run by this instance (tests, logs)

    def validate_params(self) -> None:
        p = self.params
        self.check_choice("crop", CROPS)
        cs = p["crop_scale"]
        if isinstance(cs, bool) or not isinstance(cs, (int, float)) or not math.isfinite(cs) or cs < 0:
            raise ValueError(f"metric {self.name}: parameter 'crop_scale' must be a non-negative "
                             f"number, got {cs!r}")
        for key in ("vshift", "batch_size"):
            v = p[key]
            if v is None and key == "batch_size":
                continue
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"metric {self.name}: parameter {key!r} must be a positive "
                                 f"integer, got {v!r}")
        if not isinstance(p["weights"], str):
            raise ValueError(f"metric {self.name}: parameter 'weights' must be a registry name, "
                             f"got {p['weights']!r}")
        if p["weights_path"] is not None and not isinstance(p["weights_path"], (str, Path)):
            raise ValueError(f"metric {self.name}: parameter 'weights_path' must be a path or "
                             f"null, got {p['weights_path']!r}")

    def identity(self) -> dict:
        # The value depends on the weights' content, not on where the file is or the batch size.
        params = {k: v for k, v in self.params.items() if k not in ("weights_path", "batch_size")}
        return {"name": self.name, "version": self.version, "params": params,
                "weights": {self.params["weights"]: self.weights_sha256}}

    @property
    def batch_size(self) -> int:
        if self.params["batch_size"] is not None:
            return int(self.params["batch_size"])
        return CUDA_BATCH if torch.device(self.device).type == "cuda" else CPU_BATCH

    @property
    def model(self) -> SyncNet:
        return self._model.to(self.device)

    # -- inputs ---------------------------------------------------------------------------------
    def prepared(self, pair: ClipPair) -> tuple[np.ndarray, np.ndarray, Optional[Boxes]]:
        """(T x H x W x 3 RGB uint8 prediction frames, audio, smoothed boxes or None)."""
        if pair.fps is None or abs(float(pair.fps) - FPS) > 1e-6:
            raise MetricError(f"the clip is at {pair.fps} fps; SyncNet's reference evaluation "
                              f"assumes 25 fps (4 MFCC frames per video frame) -- resample the "
                              f"video to 25 fps first")
        if pair.sample_rate != SAMPLE_RATE:
            raise MetricError(f"the audio is at {pair.sample_rate} Hz; SyncNet needs 16 kHz")
        if pair.audio is None:
            raise MetricError("the clip has no audio")
        audio = np.asarray(pair.audio)
        if audio.ndim != 1:
            raise MetricError(f"audio has shape {audio.shape}, expected mono (N,)")
        if np.issubdtype(audio.dtype, np.floating) and not np.isfinite(audio).all():
            raise MetricError("audio contains NaN or inf")
        if "frames" not in pair.pred:
            raise MetricError("prediction has no 'frames'")
        frames = np.asarray(pair.pred["frames"])
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise MetricError(f"prediction frames have shape {frames.shape}, "
                              f"expected T x H x W x 3 RGB")
        if frames.dtype != np.uint8:
            if not np.issubdtype(frames.dtype, np.floating) or not np.isfinite(frames).all():
                raise MetricError(f"prediction frames have dtype {frames.dtype} or non-finite "
                                  f"values; expected uint8 (or floats on the 0-255 scale)")
            frames = np.clip(np.rint(frames), 0, 255).astype(np.uint8)
        if num_windows(len(frames), len(audio)) < 1:
            raise MetricError(_too_short(len(frames), len(audio)))
        boxes = None
        if self.params["crop"] == "syncnet":
            boxes = self._boxes(pair, frames)
        return frames, audio, boxes

    def _boxes(self, pair: ClipPair, frames: np.ndarray) -> Boxes:
        lmk = pair.ref.get("landmarks")
        if lmk is None:
            raise MetricError("the syncnet crop needs the reference landmarks (pair.ref['landmarks'])")
        lmk = np.asarray(lmk, dtype=np.float64)
        if lmk.ndim != 3 or lmk.shape[0] != len(frames):
            raise MetricError(f"reference landmarks have shape {lmk.shape}; the prediction has "
                              f"{len(frames)} frames")
        if len(frames) < MIN_FRAMES_SYNCNET_CROP:
            raise MetricError(f"clip too short for the syncnet crop: {len(frames)} frames; its "
                              f"13-tap zero-padded median filter needs at least "
                              f"{MIN_FRAMES_SYNCNET_CROP} (use crop: full for shorter clips)")
        ref_frames = pair.ref.get("frames")
        if ref_frames is not None and tuple(ref_frames.shape[1:3]) != tuple(frames.shape[1:3]):
            sy = frames.shape[1] / ref_frames.shape[1]
            sx = frames.shape[2] / ref_frames.shape[2]
            lmk = lmk * np.array([sx, sy])
        return smooth_boxes(landmark_boxes(lmk, pair.frame_mask))

    # -- evaluation -----------------------------------------------------------------------------
    def result(self, pair: ClipPair) -> SyncResult:
        """The clip's SyncNet evaluation, computed once per clip for all three metrics."""
        frames, audio, boxes = self.prepared(pair)
        p = self.params
        key = (self.weights_sha256, p["crop"], float(p["crop_scale"]) if boxes is not None else None,
               int(p["vshift"]), array_digest(frames), array_digest(audio),
               None if boxes is None else array_digest(boxes.cx, boxes.cy, boxes.s))
        if key in _RESULTS:
            _RESULTS.move_to_end(key)
            return _RESULTS[key]
        frames = frames[..., ::-1]  # RGB -> BGR, as cv2.imread gives the reference
        if boxes is None:
            video = full_frames(frames)
        else:
            video = syncnet_crops(frames, boxes, float(p["crop_scale"]))
        res = evaluate(self.model, video, audio, vshift=int(p["vshift"]),
                       batch_size=self.batch_size, device=self.device)
        self.calls += 1
        log.debug("SyncNet %s: offset %d, min dist %.3f, conf %.3f (%d windows)", pair.clip_id,
                  res.offset, res.min_dist, res.conf, res.n_windows)
        _RESULTS[key] = res
        while len(_RESULTS) > RESULT_CACHE_SIZE:
            _RESULTS.popitem(last=False)
        return res


@register
class LSED(_SyncNetMetric):
    """LSE-D: the minimum over offsets of the mean SyncNet embedding distance (lower is better)."""
    name = "LSE-D"
    higher_is_better = False

    def clip_value(self, pair: ClipPair) -> float:
        return self.result(pair).min_dist


@register
class LSEC(_SyncNetMetric):
    """LSE-C: median over offsets minus minimum of the mean distance (higher is better)."""
    name = "LSE-C"
    higher_is_better = True

    def clip_value(self, pair: ClipPair) -> float:
        return self.result(pair).conf


@register
class AVOffset(_SyncNetMetric):
    """|AV offset| in frames at the minimum mean distance (0 = in sync; lower is better)."""
    name = "AV-offset"
    higher_is_better = False

    def clip_value(self, pair: ClipPair) -> float:
        return float(abs(self.result(pair).offset))
