"""SyncNet's reference evaluation on prepared inputs (`reference/metrics.md` §1.2).

Written from the prose description of joonson/syncnet_python's ``SyncNetInstance.py``
(``evaluate``, ``calc_pdist``); no code is copied. Input preparation (int16 audio, MFCC, the
224 x 224 crops of `syncnet_crops` / `full_frames`), the windowed embedding (`embed`), the distance
per offset (`offset_distances`) and the scores (`sync_scores`), put together by `evaluate`. The
network is in `metrics.syncnet.net`, the metrics and their parameters in `metrics.syncnet.metrics`.

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
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from scipy.signal import medfilt

from core.constants import SAMPLE_RATE
from core.errors import MetricError
from faces.crops import CROP_SCALE, Boxes, crop_face
from metrics.syncnet.net import Embedder

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
CPU_BATCH, CUDA_BATCH = 20, 128


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
        raise MetricError(too_short_reason(len(video), len(audio16)))
    mfcc = mfcc_features(audio16, sample_rate)
    vid, aud = embed(model, video, mfcc, n, batch_size, device)
    with torch.no_grad():
        return sync_scores(offset_distances(vid, aud, vshift), vshift)


def too_short_reason(n_frames: int, n_samples: int) -> str:
    """The MetricError message for a clip too short for one window (`num_windows` < 1)."""
    need = FRAMES_PER_WINDOW + 1
    usable = min(n_frames, n_samples // SAMPLES_PER_FRAME)
    if n_frames < need:
        why = f"{n_frames} frames"
    else:
        why = f"{n_samples} audio samples ({n_samples / SAMPLE_RATE:.3f} s, {usable} frames' worth)"
    return (f"clip too short for SyncNet: {why}; one 5-frame window needs {need} frames and "
            f"{need * SAMPLES_PER_FRAME} samples of 16 kHz audio (the reference evaluates "
            f"min(frames, samples // 640) - 5 windows)")
