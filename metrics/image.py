"""Image-fidelity metrics against the reference frames: PSNR and SSIM (`reference/metrics.md` §6).

Both are per-clip values: computed per frame, then averaged over the clip's frames (the NeRF meters'
convention: the mean of per-image values, not the value of the pooled error). Frames are uint8
T x H x W x 3 RGB; `pair.frame_mask` is ignored (it marks frames usable for landmark comparison, and
a frame without a detected face still has pixels to compare).

Parameters shared by both:

* ``data_range`` (default 255): the signal range L, passed explicitly (never inferred from the data).
* ``color``: "rgb" (default) compares the three channels; "gray" first converts each frame to ITU-R
  BT.601 luma with OpenCV's ``COLOR_RGB2GRAY`` (Y = 0.299 R + 0.587 G + 0.114 B, rounded to uint8
  for uint8 input, as ATVGnet's evaluation does).

PSNR
----
10·log10(L² / MSE) per frame, MSE over all pixels and channels (torchmetrics
``peak_signal_noise_ratio`` with ``dim=(1, 2, 3)``), computed in float64. A frame identical to its
reference has MSE 0 and PSNR +inf. Parameter ``max_db`` (default 100) caps each frame's value, so
one exact frame (e.g. a method that returns the identity frame as its first frame) does not make the
clip mean +inf and hide how the other frames compare; 100 dB is far above any lossy result (uint8
MSE 2.6e-5). With ``max_db: null`` nothing is capped and an exact frame gives +inf, as in the NeRF
meters. The cap is a documented deviation from those meters.

SSIM
----
Wang et al.'s SSIM: Gaussian window 11×11, σ 1.5, K1 0.01, K2 0.03, population (not sample)
covariance, per channel and averaged over channels, per frame then averaged over frames.

Borders (measured with torchmetrics 1.9 and scikit-image 0.26): torchmetrics pads each image by 5 px
with torch's *reflect* padding (edge pixel not repeated) and averages the SSIM map over **all** H×W
pixels, so its border pixels use mirrored data. scikit-image (``gaussian_weights=True, sigma=1.5,
use_sample_covariance=False``) filters with scipy's ``mode='reflect'`` (edge pixel repeated, a
different extension) and then averages only the interior, cropping (11-1)/2 = 5 px on each side --
the 'valid' region of Wang's MATLAB ``ssim_index.m``. Both use the same 11-tap Gaussian (radius
int(3.5·σ + 0.5) = 5) and compute the same map on the interior. The two means differ by 0.06% to 2%
on natural and smooth images and by 17% on noise. Parameter ``border``:

* "valid" (default): the mean of the SSIM map over the interior (5 px cropped each side), computed
  by `ssim_valid` in float64 with the separable Gaussian (the same window and formula as
  torchmetrics; the interior of its map is identical). This equals scikit-image and the MATLAB
  reference to ~1e-14 (tests/calibration/test_image_parity.py). Deviation from "SSIM via
  torchmetrics": torchmetrics' own float32 path lets E[x²] − E[x]² cancel at 255² scale (identical
  256 px frames score 0.99994, errors up to 1.3e-4 relative on flat images), and its float64 path
  costs ~1.2 s per frame on 2 CPU cores; the separable float64 filter costs ~50 ms.
* "full": torchmetrics' own float32 value (mean over every pixel, reflect-padded borders), for comparing with
  numbers computed by torchmetrics ``StructuralSimilarityIndexMeasure``.

Frames must be at least 11×11 pixels.
"""

from __future__ import annotations

import math
from typing import Iterator

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import correlate1d
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

from metrics import register
from core.types import ClipPair
from metrics.base import Metric
from core.errors import MetricError

COLORS = ("rgb", "gray")
SSIM_KERNEL = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03
SSIM_BORDERS = ("valid", "full")
HALF = (SSIM_KERNEL - 1) // 2  # border cropped by the 'valid' convention


def to_gray(frames: np.ndarray) -> np.ndarray:
    """T x H x W x 3 RGB -> T x H x W x 1 BT.601 luma (OpenCV RGB2GRAY; uint8 stays uint8)."""
    if frames.dtype not in (np.uint8, np.uint16, np.float32):
        frames = frames.astype(np.float32)
    out = np.empty(frames.shape[:3] + (1,), dtype=frames.dtype)
    for i, frame in enumerate(frames):
        out[i, ..., 0] = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
    return out


def prepare_frames(pair: ClipPair, color: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate the pair's frames and return (pred, ref) as T x H x W x C arrays (C = 3 or 1)."""
    for side, fields in (("prediction", pair.pred), ("reference", pair.ref)):
        if "frames" not in fields:
            raise MetricError(f"{side} has no 'frames'")
    pred = np.asarray(pair.pred["frames"])
    ref = np.asarray(pair.ref["frames"])
    for side, arr in (("prediction", pred), ("reference", ref)):
        if arr.ndim != 4 or arr.shape[-1] != 3:
            raise MetricError(f"{side} frames have shape {arr.shape}, expected T x H x W x 3 RGB")
        if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
            raise MetricError(f"{side} frames have dtype {arr.dtype}, expected uint8 or float")
    if pred.shape[0] != ref.shape[0]:
        raise MetricError(f"prediction has {pred.shape[0]} frames, reference {ref.shape[0]}")
    if pred.shape[0] == 0:
        raise MetricError("the clip has no frames")
    if pred.shape[1:3] != ref.shape[1:3]:
        raise MetricError(f"prediction frames are {pred.shape[2]}x{pred.shape[1]} (WxH), "
                          f"reference {ref.shape[2]}x{ref.shape[1]}")
    for side, arr in (("prediction", pred), ("reference", ref)):
        if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
            raise MetricError(f"{side} frames contain NaN or inf")
    if color == "gray":
        pred, ref = to_gray(pred), to_gray(ref)
    return pred, ref


class _ImageMetric(Metric):
    higher_is_better = True
    needs = ("frames",)
    level = "clip"
    defaults = {"data_range": 255.0, "color": "rgb"}
    batch_size = 32  # frames per torch call; does not change the value

    def validate_params(self) -> None:
        dr = self.params["data_range"]
        if isinstance(dr, bool) or not isinstance(dr, (int, float)) or not math.isfinite(dr) \
                or dr <= 0:
            raise ValueError(f"metric {self.name}: parameter 'data_range' must be a positive "
                             f"number, got {dr!r}")
        self.check_choice("color", COLORS)

    def _batches(self, pred: np.ndarray, ref: np.ndarray, dtype: torch.dtype
                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """N x C x H x W tensors on `self.device`, `batch_size` frames at a time."""
        for start in range(0, pred.shape[0], self.batch_size):
            sl = slice(start, start + self.batch_size)
            p = torch.from_numpy(np.ascontiguousarray(pred[sl])).to(self.device, dtype)
            r = torch.from_numpy(np.ascontiguousarray(ref[sl])).to(self.device, dtype)
            yield p.permute(0, 3, 1, 2), r.permute(0, 3, 1, 2)

    def clip_value(self, pair: ClipPair) -> float:
        pred, ref = prepare_frames(pair, self.params["color"])
        return float(np.mean(self.frame_values(pred, ref)))

    def frame_values(self, pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
        raise NotImplementedError


@register
class PSNR(_ImageMetric):
    """Mean over frames of the per-frame PSNR in dB, each frame capped at `max_db`."""
    name = "PSNR"
    unit = "dB"
    defaults = {**_ImageMetric.defaults, "max_db": 100.0}

    def validate_params(self) -> None:
        super().validate_params()
        cap = self.params["max_db"]
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, (int, float)) or cap <= 0):
            raise ValueError(f"metric {self.name}: parameter 'max_db' must be a positive number or "
                             f"null, got {cap!r}")

    def frame_values(self, pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
        out = []
        with torch.no_grad():
            for p, r in self._batches(pred, ref, torch.float64):
                v = peak_signal_noise_ratio(p, r, data_range=float(self.params["data_range"]),
                                            reduction="none", dim=(1, 2, 3))
                out.append(v.reshape(-1).cpu().numpy())
        values = np.concatenate(out)
        cap = self.params["max_db"]
        return values if cap is None else np.minimum(values, float(cap))


def gaussian_window(size: int = SSIM_KERNEL, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """The normalised 1-D Gaussian whose outer product is Wang's 11x11 window."""
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    window = torch.exp(-(coords ** 2) / (2 * sigma ** 2))
    return window / window.sum()


def ssim_valid(pred: torch.Tensor, ref: torch.Tensor, data_range: float,
               backend: str | None = None) -> torch.Tensor:
    """Per-image SSIM (N,) of float64 N x C x H x W tensors over the 'valid' interior.

    The Gaussian filter is separable: two 11-tap passes replace one 121-tap convolution. float64
    keeps E[x^2] - E[x]^2 from cancelling (in float32, identical 256 px frames score about 0.99994
    instead of 1). On CPU scipy's 1-D filters do the passes (about 8x faster than torch's grouped
    float64 convolutions); on a GPU torch does, with the same arithmetic.
    """
    window = gaussian_window()
    if pred.device.type == "cpu":
        taps = window.numpy()

        def blur(x: torch.Tensor) -> torch.Tensor:
            out = correlate1d(correlate1d(x.numpy(), taps, axis=2), taps, axis=3)
            return torch.from_numpy(out[..., HALF:-HALF, HALF:-HALF])
    else:
        channels = pred.shape[1]
        window = window.to(pred.device)
        rows = window.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
        cols = window.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)

        def blur(x: torch.Tensor) -> torch.Tensor:
            return F.conv2d(F.conv2d(x, rows, groups=channels), cols, groups=channels)

    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    mu_p, mu_r = blur(pred), blur(ref)
    var_p = blur(pred * pred) - mu_p ** 2
    var_r = blur(ref * ref) - mu_r ** 2
    cov = blur(pred * ref) - mu_p * mu_r
    ssim_map = ((2 * mu_p * mu_r + c1) * (2 * cov + c2)) / ((mu_p ** 2 + mu_r ** 2 + c1) * (var_p + var_r + c2))
    return ssim_map.mean(dim=(1, 2, 3))


@register
class SSIM(_ImageMetric):
    """Mean over frames of Wang's SSIM (Gaussian 11x11, sigma 1.5), channels averaged."""
    name = "SSIM"
    defaults = {"data_range": 255.0, "color": "rgb", "border": "valid"}

    def validate_params(self) -> None:
        super().validate_params()
        self.check_choice("border", SSIM_BORDERS)

    def frame_values(self, pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
        h, w = pred.shape[1:3]
        if min(h, w) < SSIM_KERNEL:
            raise MetricError(f"frames are {w}x{h}; SSIM needs at least "
                              f"{SSIM_KERNEL}x{SSIM_KERNEL} pixels")
        out = []
        with torch.no_grad():
            if self.params["border"] == "valid":
                # An exact copy scores exactly 1 by the formula; skip its filtering (oracle rows,
                # identity frames). The others go through the full computation.
                same = np.array([np.array_equal(p, r) for p, r in zip(pred, ref)])
                values = np.ones(len(pred))
                todo = np.flatnonzero(~same)
                if todo.size:
                    got = [ssim_valid(p, r, float(self.params["data_range"])).cpu().numpy()
                           for p, r in self._batches(pred[todo], ref[todo], torch.float64)]
                    values[todo] = np.concatenate(got)
                return values
            else:
                for p, r in self._batches(pred, ref, torch.float32):
                    _, ssim_map = structural_similarity_index_measure(
                        p, r, gaussian_kernel=True, sigma=SSIM_SIGMA, kernel_size=SSIM_KERNEL,
                        data_range=float(self.params["data_range"]), k1=SSIM_K1, k2=SSIM_K2,
                        reduction="none", return_full_image=True)
                    out.append(ssim_map.mean(dim=(1, 2, 3)).double().cpu().numpy())
        return np.concatenate(out)
