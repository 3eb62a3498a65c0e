"""The SyncNet metrics LSE-D, LSE-C and AV-offset (`reference/metrics.md` §1).

The network is `metrics.syncnet.net`, the reference evaluation `metrics.syncnet.features`; this
module checks a clip's inputs, computes the crop boxes, runs one evaluation per clip for the three
metrics and keeps its result.

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

Frame path (parameter ``frame_path``)
-------------------------------------
* ``"direct"`` (default): the frames are scored as they are.
* ``"jpeg_roundtrip"``: the frames ``evaluate`` reads go through ffmpeg's JPEG encoder at the
  quality of syncnet_python's ``ffmpeg -i VIDEO -threads 1 -f image2 %06d.jpg`` and back
  (`metrics.syncnet.jpeg`: what is reproduced and what is not). Where that happens follows the
  reference: with ``crop: full`` (Wav2Lip's ``calculate_scores_LRS.py`` hands ``evaluate`` the
  generated video itself) the whole frames are round-tripped before the resize to 224; with
  ``crop: syncnet`` (``evaluate`` reads ``run_pipeline.py``'s crop videos) the 224 x 224 crops
  are. Papers' LSE numbers come through this path; it moves LSE-D by up to ~0.4% (issue 17). The
  audio path is the same for both values (see `metrics.syncnet.jpeg`). The value's identity holds
  the frame path and, for the round trip, the libavcodec, libswscale and OpenCV versions.

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
``batch_size`` (None: 20 on CPU, 128 on CUDA; not part of the metric's identity),
``frame_path`` ("direct" | "jpeg_roundtrip", above).

Failures: fps other than 25 (the reference assumes 25 fps), a sample rate other than 16 kHz, too few
frames or too little audio for one window -> `MetricError`; weights missing -> `MetricUnavailable`
naming ``talkbench weights download syncnet_v2`` (raised when the metric is built).
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from core import weights
from core.constants import SAMPLE_RATE
from core.errors import MetricError, MetricUnavailable
from core.hashing import array_digest
from core.types import ClipPair
from faces.crops import CROP_SCALE, Boxes, landmark_boxes, smooth_boxes
from metrics import register
from metrics.base import Metric
from metrics.syncnet.features import (CPU_BATCH, CUDA_BATCH, FPS, VSHIFT, SyncResult, evaluate,
                                      full_frames, num_windows, syncnet_crops, too_short_reason)
from metrics.syncnet.jpeg import FRAME_PATHS, encoder_versions, jpeg_roundtrip
from metrics.syncnet.net import SyncNet, read_expert_config, shared_model

log = logging.getLogger(__name__)

CROPS = ("syncnet", "full")
MIN_FRAMES_SYNCNET_CROP = 7
RESULT_CACHE_SIZE = 64


# ----------------------------------------------------------------------------------- result cache
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
                                "weights": "syncnet_v2", "weights_path": None, "batch_size": None,
                                "frame_path": "direct"}
    choices: dict[str, tuple] = {"crop": CROPS, "frame_path": FRAME_PATHS}

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
        self._model = shared_model(str(Path(self.weights_file).resolve()), self.weights_sha256)
        self.calls = 0  # network evaluations run by this instance (tests, logs)

    def validate_params(self) -> None:
        p = self.params
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
        out = {"name": self.name, "version": self.version, "params": params,
               "weights": {self.params["weights"]: self.weights_sha256}}
        if params["frame_path"] == "jpeg_roundtrip":  # the encoder's bytes depend on these
            out["jpeg"] = encoder_versions()
        return out

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
            raise MetricError(too_short_reason(len(frames), len(audio)))
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
               int(p["vshift"]), p["frame_path"], array_digest(frames), array_digest(audio),
               None if boxes is None else array_digest(boxes.cx, boxes.cy, boxes.s))
        if key in _RESULTS:
            _RESULTS.move_to_end(key)
            return _RESULTS[key]
        jpeg = p["frame_path"] == "jpeg_roundtrip"
        if boxes is None:
            # RGB -> BGR, as cv2.imread gives the reference (the JPEG decoder gives BGR itself)
            frames = jpeg_roundtrip(frames, FPS) if jpeg else frames[..., ::-1]
            video = full_frames(frames)
        else:
            video = syncnet_crops(frames[..., ::-1], boxes, float(p["crop_scale"]))
            if jpeg:
                video = jpeg_roundtrip(np.ascontiguousarray(video[..., ::-1]), FPS)
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
    unit = "frames"
    higher_is_better = False

    def clip_value(self, pair: ClipPair) -> float:
        return float(abs(self.result(pair).offset))
