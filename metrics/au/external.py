"""AU detectors that run outside talkbench's own code: OpenFace CSVs and py-feat.

Backends ``openface-csv`` and ``py-feat`` of AU-F1 / AU-Acc (`metrics.au.metrics`). Both give, per
frame of a clip, the occurrence of the five AUs of `AU_NAMES` and whether the frame is usable.

``openface-csv`` (needs ``frames``): reads OpenFace 2.x ``FeatureExtraction`` CSVs made outside
talkbench. Parameter ``csv_dir`` is a folder with ``ref/<clip_id>.csv`` (OpenFace on the
ground-truth videos) and ``pred/<clip_id>.csv`` (on the method's videos, e.g. the run folder's
``<clip_id>.mp4``). Headers are read with their leading spaces stripped (OpenFace writes
``frame, face_id, timestamp, confidence, success, ...``); the columns used are ``frame`` (1-based),
``confidence``, ``success``, and ``AU10_c``, ``AU14_c``, ``AU20_c``, ``AU25_c``, ``AU26_c``
(presence 0/1). Where a frame has several rows (several faces) the most confident usable row is
kept. Frames outside the clip's length are ignored.

``py-feat`` (needs ``frames``): py-feat's classic detector (``feat.Detectorv1`` in py-feat 2.x, the
Detector of `reference/metrics.md` §4.2: RetinaFace faces, mobilefacenet landmarks, ``au_model="xgb"``;
emotion, identity and gaze models off) run by talkbench on the uint8 frames of both sides through
``detect(frames, data_type="tensor")`` (a T x 3 x H x W uint8 tensor, what its image loader feeds
the detector). From the returned Fex (one row per face and frame, ``frame`` 0-based) the columns
``AU10``, ``AU14``, ``AU20``, ``AU25``, ``AU26`` (xgb: ``predict_proba``, 0-1) are read and an AU is
present where its value is >= 0.5 (`PYFEAT_THRESHOLD`, metrics.md's binarisation; svm outputs 0/1,
which the same cut reads unchanged). Where a frame has several faces the row with the highest
``FaceScore`` is kept; rows with NaN AUs (py-feat's rows for frames without a face) are not usable.
py-feat is an optional extra (``pip install talkbench[au]``), imported only here: it pulls a CUDA NCCL
wheel and needs FFmpeg's shared libraries. Its models come from the Hugging Face hub (``py-feat/*``)
through py-feat's own loader, not from talkbench's weights folder; offline without them the metric
is unavailable.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import MetricError, MetricUnavailable
from metrics.au.detector import AU_NAMES

PYFEAT_THRESHOLD = 0.5  # presence cut on py-feat's AU columns (metrics.md §4.2)
PYFEAT_AU_MODEL = "xgb"
PYFEAT_INSTALL = "pip install talkbench[au]"


# --------------------------------------------------------------------------------------------
# OpenFace CSVs
# --------------------------------------------------------------------------------------------

OPENFACE_COLUMNS = tuple(f"{name}_c" for name in AU_NAMES)


def read_openface_csv(path: Path, num_frames: int, min_confidence: float
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(occurrence T x 5 bool, usable (T,) bool) from an OpenFace FeatureExtraction CSV."""
    path = Path(path)
    occurrence = np.zeros((num_frames, len(AU_NAMES)), dtype=bool)
    best = np.full(num_frames, -np.inf)
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise MetricError(f"{path} is empty") from None
        missing = [c for c in ("frame", "confidence", "success") + OPENFACE_COLUMNS
                   if c not in header]
        if missing:
            raise MetricError(f"{path} lacks the column(s) {missing} (is it an OpenFace 2.x "
                              f"FeatureExtraction CSV with AUs?)")
        col = {name: header.index(name) for name in ("frame", "confidence", "success")
               + OPENFACE_COLUMNS}
        for line, row in enumerate(reader, start=2):
            if not row or all(not cell.strip() for cell in row):
                continue
            try:
                frame = int(float(row[col["frame"]]))
                conf = float(row[col["confidence"]])
                success = float(row[col["success"]])
                aus = [float(row[col[c]]) for c in OPENFACE_COLUMNS]
            except (ValueError, IndexError) as exc:
                raise MetricError(f"{path}, line {line}: unreadable row ({exc})") from None
            t = frame - 1
            if not 0 <= t < num_frames or success != 1 or not conf >= min_confidence:
                continue
            if conf > best[t]:
                best[t] = conf
                occurrence[t] = np.array(aus) >= 0.5
    return occurrence, np.isfinite(best)


def occurrence_from_fex(fex, num_frames: int, threshold: float = PYFEAT_THRESHOLD
                        ) -> tuple[np.ndarray, np.ndarray]:
    """(occurrence T x 5 bool, usable (T,) bool) from a py-feat Fex / DataFrame (module docstring)."""
    missing = [c for c in ("frame",) + AU_NAMES if c not in fex.columns]
    if missing:
        raise MetricError(f"py-feat output lacks the column(s) {missing} (was the Detector built "
                          f"with an au_model?)")
    frames = np.asarray(fex["frame"], dtype=np.float64)
    aus = np.asarray(fex[list(AU_NAMES)], dtype=np.float64)
    scores = (np.asarray(fex["FaceScore"], dtype=np.float64) if "FaceScore" in fex.columns
              else np.zeros(len(frames)))
    occurrence = np.zeros((num_frames, len(AU_NAMES)), dtype=bool)
    best = np.full(num_frames, -np.inf)
    for frame, row, score in zip(frames, aus, scores):
        if not np.isfinite(frame) or not np.isfinite(row).all():
            continue
        t = int(frame)
        score = score if np.isfinite(score) else -1e300
        if 0 <= t < num_frames and score > best[t]:
            best[t] = score
            occurrence[t] = row >= threshold
    return occurrence, np.isfinite(best)


class PyFeatAUDetector:
    """py-feat's classic Detector (xgb AUs) on uint8 RGB frames; built on first use."""

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self._detector: Any = None

    @staticmethod
    def package():
        try:
            import feat
        except ImportError as exc:
            raise MetricUnavailable(f"backend py-feat needs the package py-feat ({exc}); install it "
                                    f"with `{PYFEAT_INSTALL}`") from exc
        return feat

    def detector(self):
        if self._detector is None:
            import inspect

            feat = self.package()
            cls = getattr(feat, "Detectorv1", None) or getattr(feat, "Detector", None)
            if cls is None:
                raise MetricUnavailable(f"py-feat {getattr(feat, '__version__', '?')} has neither "
                                        f"Detectorv1 nor Detector; `{PYFEAT_INSTALL}` installs a "
                                        f"supported release")
            wanted = {"au_model": PYFEAT_AU_MODEL, "landmark_model": "mobilefacenet",
                      "emotion_model": None, "identity_model": None, "gaze_model": None,
                      "device": self.device}
            accepted = inspect.signature(cls).parameters
            try:
                self._detector = cls(**{k: v for k, v in wanted.items() if k in accepted})
            except Exception as exc:  # its models come from the HF hub; offline they may be absent
                raise MetricUnavailable(f"py-feat could not build its Detector ({exc}); it fetches "
                                        f"its models from the Hugging Face hub (py-feat/*) on first "
                                        f"use: run once with network access") from exc
        return self._detector

    def detect(self, frames: np.ndarray):
        import torch

        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise MetricError(f"py-feat needs uint8 T x H x W x 3 frames, got {frames.dtype} "
                              f"{frames.shape}")
        tensor = torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 3, 1, 2)))
        return self.detector().detect(tensor, data_type="tensor", batch_size=1,
                                      progress_bar=False)
