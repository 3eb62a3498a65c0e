"""Speech-related action units: AU-F1 and AU-Acc (TCSAN protocol, `reference/metrics.md` §4).

Protocol (TCSAN, "Effectiveness of TCSAN"): the occurrence of the five speech-related AUs -- AU10
upper-lip raiser, AU14 dimpler, AU20 lip stretcher, AU25 lips part, AU26 jaw drop -- is detected on
every ground-truth frame and on the generated frame with the same index, by the same detector; the
ground-truth detections are the labels. Per AU, F1 and accuracy are computed over **all frames of
the test set** pooled (not per clip), then averaged over the AUs ("Avg. F1", "Avg. Acc."). The
metrics are therefore set-level (`level = "set"`):

* ``AU-F1``: F1 = 2·TP / (2·TP + FP + FN) per AU, macro-averaged. An AU that neither the labels nor
  the prediction ever show has no F1 (0/0): it is left out of the average and named in `last_notes`
  (scikit-learn would count it as 0). If no AU has an F1 the set is a `MetricError`.
* ``AU-Acc``: the fraction of frames where the prediction's occurrence equals the label, per AU,
  macro-averaged. A fraction in [0, 1] (TCSAN prints it in per cent).

Parameter ``au``: "all" (default, the macro average) or one of "AU10", "AU14", "AU20", "AU25",
"AU26" for that AU alone (give each a label in the protocol). Every call also leaves the per-AU
counts, F1 and accuracy in `last_detail`. Parameter ``labels``: "detected" (default, the paper's
protocol) or "exact", which takes the labels from the reference's ``aus`` (T x 5 in the order above;
synthtalk has exact AU ground truth) and runs the detector on the prediction only.

Frames: a frame counts when both sides have a detection there (the geometric backend honours
`ClipPair.frame_mask`; OpenFace rows need ``success`` 1 and ``confidence`` >= ``min_confidence``,
default 0.8, a talkbench choice: the references only say to drop low-confidence rows).
A clip that cannot be read (missing points or CSV) is skipped and named in `last_notes`; the set
fails only if no clip is usable.

Backends (``backend``)
----------------------
``geometric`` (default; needs ``landmarks``): occurrence from the 68 iBUG landmarks of each side.
Each frame's points are first *frontalised*: a scaled-orthographic camera (2x3 matrix with
orthogonal rows of equal norm, plus a 2D offset) is fitted by least squares to map the rigid points
`ALIGN_POINTS` (jaw ends, nose bridge, eye corners) of the 3D template
`faces.pose.FACE_TEMPLATE_MM` onto the frame, and every point is brought back to template
millimetres assuming the template's depth for it. This removes translation, scale, roll and, to
first order, yaw and pitch. Then, in millimetres (y down):

* AU10: upper-lip arch: ((y61 + y63)/2 − y62) + ((y49 + y53)/2 − y51), how much higher the middle of
  the upper lip is than its sides (the raiser lifts the middle most);
* AU14: mouth-corner tilt |y48 − y54| (a one-sided dimpler pulls one corner; a symmetric dimpler is
  not seen by this cue);
* AU20: lip stretch: (mouth width x54 − x48) / (lip thickness (y57 − y51) − (y66 − y62)), minus the
  clip's median of that ratio (the stretcher widens and thins the lips; the median calibrates
  the speaker's own mouth, like OpenFace's per-video median in its dynamic models);
* AU25: inner-lip gap, mean of y67 − y61, y66 − y62, y65 − y63;
* AU26: chin drop: y8 minus the clip's 5th percentile of y8 (the jaw at rest).

An AU is present where its feature exceeds the fitted threshold in `GEOMETRIC_THRESHOLDS`. The
thresholds were fitted (`fit_thresholds`: per AU the cut that maximises F1) against synthtalk's
exact AU labels (`Clip.aus`, defined from the 3D mouth geometry and expression coefficients in
`bench/data/synthtalk/face.py`) on the exact 2D landmarks of the small corpus (seed 0), speakers
spk01-spk08 (3935 frames); `python -m metrics.au [--dlib]` refits and prints this report. F1 /
accuracy of the detector against the exact labels:

    AU    threshold   fit: spk01-08,   held out: spk09-12,   held out: dlib's landmarks on
                      exact landmarks  exact landmarks       the rendered frames
    AU10    3.934     0.695 / 0.944    0.831 / 0.955         0.455 / 0.791
    AU14    0.560     1.000 / 1.000    1.000 / 1.000         0.328 / 0.557
    AU20    0.087     0.630 / 0.766    0.600 / 0.748         0.574 / 0.718
    AU25    1.000     1.000 / 0.999    0.999 / 0.999         0.945 / 0.915
    AU26    5.807     0.934 / 0.944    0.911 / 0.929         0.843 / 0.869
    mean              0.852 / 0.931    0.868 / 0.926         0.629 / 0.770
    (3935, 1947 and 1947 frames; label rates AU10 10 %, AU14 13 %, AU20 30 %, AU25 81 %, AU26 44 %)

Scored on exact landmarks (methods that output landmarks) the detector is good except for AU10 and
AU20; through dlib's detector on frames, AU14 (a corner tilt of 1-2 px) is lost in the predictor's
noise and AU10 halves. Comparing generated and ground-truth frames with the same detector still
measures agreement, as the paper's OpenFace protocol does, but read these AUs with that in mind.

The cues are geometric proxies tuned on synthtalk's face model; on real faces they are a cheap,
weights-free stand-in, not a replacement for a trained AU detector. AU10 and AU20 are the weak
ones (their synthtalk labels depend on expression coefficients and a speaker's neutral lip shape,
which 2D points show only partly).

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

import argparse
import csv
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from metrics import register
from core.types import ClipPair
from metrics.base import Metric
from core.errors import MetricError, MetricUnavailable
from faces.pose import FACE_TEMPLATE_MM

log = logging.getLogger(__name__)

AU_NAMES: tuple[str, ...] = ("AU10", "AU14", "AU20", "AU25", "AU26")
AU_CHOICES = ("all",) + AU_NAMES
LABEL_SOURCES = ("detected", "exact")
BACKENDS = ("geometric", "openface-csv", "py-feat")
PYFEAT_THRESHOLD = 0.5  # presence cut on py-feat's AU columns (metrics.md §4.2)
PYFEAT_AU_MODEL = "xgb"
PYFEAT_INSTALL = "pip install talkbench[au]"

# Rigid points for the frontalisation (jaw ends, nose bridge, eye corners).
ALIGN_POINTS: tuple[int, ...] = (0, 16, 27, 28, 29, 30, 36, 39, 42, 45)
# Points the geometric features read (besides ALIGN_POINTS).
FEATURE_POINTS: tuple[int, ...] = (8, 48, 49, 51, 53, 54, 57, 61, 62, 63, 65, 66, 67)
CHIN_REST_PERCENTILE = 5.0

# Fitted thresholds (mm, or a ratio for AU20): see the module docstring and `python -m metrics.au`.
GEOMETRIC_THRESHOLDS: dict[str, float] = {
    "AU10": 3.934,  # upper-lip arch, mm
    "AU14": 0.56,  # mouth-corner tilt, mm
    "AU20": 0.087,  # width / lip thickness above the clip median
    "AU25": 1.0,  # inner-lip gap, mm (synthtalk's own definition is gap > 1 mm)
    "AU26": 5.807,  # chin below its rest height, mm (synthtalk's: > 6 mm below neutral)
}


# --------------------------------------------------------------------------------------------
# Geometric detector
# --------------------------------------------------------------------------------------------

def frontalise(landmarks: np.ndarray) -> np.ndarray:
    """T x 68 x 2 pixels -> T x 68 x 2 template millimetres (module docstring). NaN frames stay NaN."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.ndim != 3 or lm.shape[1:] != (68, 2):
        raise ValueError(f"landmarks have shape {lm.shape}, expected T x 68 x 2")
    tpl = FACE_TEMPLATE_MM
    design = np.c_[tpl[list(ALIGN_POINTS)], np.ones(len(ALIGN_POINTS))]  # P x 4
    out = np.full(lm.shape, np.nan)
    for t in range(lm.shape[0]):
        if not np.isfinite(lm[t]).all():
            continue
        coef, *_ = np.linalg.lstsq(design, lm[t, list(ALIGN_POINTS)], rcond=None)  # 4 x 2
        cam, offset = coef[:3].T, coef[3]  # 2 x 3, (2,)
        u, s, vt = np.linalg.svd(cam, full_matrices=False)
        cam = u @ np.diag([s.mean(), s.mean()]) @ vt  # nearest scaled-orthographic camera
        rhs = lm[t] - offset - np.outer(tpl[:, 2], cam[:, 2])
        try:
            out[t] = np.linalg.solve(cam[:, :2], rhs.T).T
        except np.linalg.LinAlgError:
            continue
    return out


def au_features(landmarks: np.ndarray, mask: Optional[np.ndarray] = None) -> np.ndarray:
    """T x 5 geometric AU features (order `AU_NAMES`) of T x 68 x 2 landmarks; NaN where masked.

    Clip-calibrated features (AU20, AU26) use only the frames where `mask` is True.
    """
    lm = np.asarray(landmarks, dtype=np.float64).copy()
    t = lm.shape[0]
    mask = np.ones(t, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    lm[~mask] = np.nan
    a = frontalise(lm)
    x, y = a[..., 0], a[..., 1]
    ok = np.isfinite(a).all(axis=(1, 2))
    feats = np.full((t, len(AU_NAMES)), np.nan)
    if not ok.any():
        return feats
    au10 = ((y[:, 61] + y[:, 63]) / 2 - y[:, 62]) + ((y[:, 49] + y[:, 53]) / 2 - y[:, 51])
    au14 = np.abs(y[:, 48] - y[:, 54])
    thickness = (y[:, 57] - y[:, 51]) - (y[:, 66] - y[:, 62])
    width = x[:, 54] - x[:, 48]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(thickness > 0, width / thickness, np.nan)
    good_ratio = ok & np.isfinite(ratio)
    au20 = ratio - (np.median(ratio[good_ratio]) if good_ratio.any() else np.nan)
    au25 = (y[:, [67, 66, 65]] - y[:, [61, 62, 63]]).mean(axis=1)
    au26 = y[:, 8] - np.percentile(y[ok, 8], CHIN_REST_PERCENTILE)
    feats[:] = np.stack([au10, au14, au20, au25, au26], axis=1)
    feats[~ok] = np.nan
    return feats


def detect_from_features(features: np.ndarray,
                         thresholds: Optional[dict[str, float]] = None) -> np.ndarray:
    """T x 5 occurrence (bool) where each feature exceeds its threshold (NaN -> False)."""
    thr = GEOMETRIC_THRESHOLDS if thresholds is None else thresholds
    cut = np.array([thr[name] for name in AU_NAMES])
    with np.errstate(invalid="ignore"):
        return np.asarray(features) > cut


def detect_geometric(landmarks: np.ndarray, mask: Optional[np.ndarray] = None,
                     thresholds: Optional[dict[str, float]] = None) -> tuple[np.ndarray, np.ndarray]:
    """(occurrence T x 5 bool, usable frames (T,) bool) from T x 68 x 2 landmarks."""
    feats = au_features(landmarks, mask)
    return detect_from_features(feats, thresholds), np.isfinite(feats).all(axis=1)


# --------------------------------------------------------------------------------------------
# Scores
# --------------------------------------------------------------------------------------------

@dataclass
class AUScore:
    """Confusion counts of one AU over the pooled frames, with F1 (NaN if 0/0) and accuracy."""

    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.fn + self.tn

    @property
    def f1(self) -> float:
        denom = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / denom if denom else float("nan")

    @property
    def accuracy(self) -> float:
        return (self.tp + self.tn) / self.n if self.n else float("nan")

    def as_dict(self) -> dict:
        return {"tp": self.tp, "fp": self.fp, "fn": self.fn, "tn": self.tn, "n": self.n,
                "f1": self.f1, "accuracy": self.accuracy}


def au_scores(pred: np.ndarray, labels: np.ndarray) -> dict[str, AUScore]:
    """Per-AU confusion counts of N x 5 predicted occurrence against N x 5 labels."""
    pred = np.asarray(pred, dtype=bool)
    labels = np.asarray(labels, dtype=bool)
    if pred.shape != labels.shape or pred.ndim != 2 or pred.shape[1] != len(AU_NAMES):
        raise ValueError(f"expected two N x {len(AU_NAMES)} arrays, got {pred.shape} and "
                         f"{labels.shape}")
    out = {}
    for k, name in enumerate(AU_NAMES):
        p, y = pred[:, k], labels[:, k]
        out[name] = AUScore(tp=int((p & y).sum()), fp=int((p & ~y).sum()),
                            fn=int((~p & y).sum()), tn=int((~p & ~y).sum()))
    return out


def fit_threshold(values: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """The cut c maximising the F1 of `values > c` against `labels`: (c, F1).

    Candidates are midpoints between consecutive distinct values (and one below the smallest).
    Where several neighbouring candidates reach the best F1 (a plateau, e.g. perfectly separated
    classes), the middle of the widest such run is taken, the cut farthest from both classes.
    NaN values are ignored.
    """
    v = np.asarray(values, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    keep = np.isfinite(v)
    v, y = v[keep], y[keep]
    if v.size == 0 or not y.any():
        raise ValueError("fitting needs finite values with at least one positive label")
    order = np.argsort(-v, kind="stable")
    v, y = v[order], y[order]
    distinct = np.r_[np.flatnonzero(np.diff(v) != 0), v.size - 1]  # last index of each value
    tp = np.cumsum(y)[distinct]
    fp = np.cumsum(~y)[distinct]
    fn = y.sum() - tp
    f1 = 2 * tp / (2 * tp + fp + fn)
    # predicting positive for everything down to distinct[i]: the cut is below v[distinct[i]]
    lower = np.r_[v[distinct[1:]], v[-1] - 1.0]
    cuts = (v[distinct] + lower) / 2
    best = np.flatnonzero(f1 == f1.max())
    runs = np.split(best, np.flatnonzero(np.diff(best) != 1) + 1)
    widths = [cuts[r[0]] - cuts[r[-1]] for r in runs]
    run = runs[int(np.argmax(widths))]
    return float((cuts[run[0]] + cuts[run[-1]]) / 2), float(f1[run[0]])


def fit_thresholds(features: np.ndarray, labels: np.ndarray) -> dict[str, tuple[float, float]]:
    """Per AU: (threshold, F1 at it) fitted on N x 5 features against N x 5 exact labels."""
    return {name: fit_threshold(features[:, k], labels[:, k]) for k, name in enumerate(AU_NAMES)}


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


# --------------------------------------------------------------------------------------------
# Metric classes
# --------------------------------------------------------------------------------------------

_GEOMETRIC_POINTS = tuple(sorted(set(ALIGN_POINTS) | set(FEATURE_POINTS)))


class _AUMetric(Metric):
    higher_is_better = True
    needs = ("landmarks",)  # backend geometric (the default); openface-csv needs ("frames",)
    level = "set"
    defaults = {"backend": "geometric", "au": "all", "labels": "detected", "csv_dir": None,
                "min_confidence": 0.8}

    def points_problem(self, points: tuple[int, ...]) -> Optional[str]:
        if self.params["backend"] != "geometric":
            return None
        missing = [p for p in _GEOMETRIC_POINTS if p not in points]
        return (f"the geometric AU detector needs iBUG points {missing}, which the method does "
                "not predict") if missing else None

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.needs = ("landmarks",) if self.params["backend"] == "geometric" else ("frames",)
        self._pyfeat: Optional[PyFeatAUDetector] = None
        if self.params["backend"] == "py-feat":
            PyFeatAUDetector.package()  # unavailable now, not on the first clip
            self._pyfeat = PyFeatAUDetector()
        if self.params["backend"] == "openface-csv":
            folder = Path(self.params["csv_dir"]).expanduser()
            for side in ("ref", "pred"):
                if not (folder / side).is_dir():
                    raise MetricUnavailable(
                        f"metric {self.name}: backend openface-csv reads {folder / side}/"
                        f"<clip_id>.csv, which does not exist; run OpenFace's FeatureExtraction on "
                        f"the ground-truth ({'ref'}) and generated ({'pred'}) videos into csv_dir")
        self.last_detail: dict[str, dict] = {}
        self.last_notes: list[str] = []

    def validate_params(self) -> None:
        p = self.params
        self.check_choice("backend", BACKENDS)
        self.check_choice("au", AU_CHOICES)
        self.check_choice("labels", LABEL_SOURCES)
        mc = p["min_confidence"]
        if isinstance(mc, bool) or not isinstance(mc, (int, float)) or not 0 <= mc <= 1:
            raise ValueError(f"metric {self.name}: parameter 'min_confidence' must be a number in "
                             f"[0, 1], got {mc!r}")
        if p["backend"] == "openface-csv":
            if not isinstance(p["csv_dir"], (str, Path)) or not str(p["csv_dir"]):
                raise ValueError(f"metric {self.name}: backend openface-csv needs the parameter "
                                 f"'csv_dir' (a folder with ref/ and pred/ OpenFace CSVs)")
        elif p["csv_dir"] is not None:
            raise ValueError(f"metric {self.name}: parameter 'csv_dir' is for backend "
                             f"openface-csv only")

    def identity(self) -> dict:
        ident = super().identity()
        if self.params["backend"] == "geometric":
            ident["thresholds"] = dict(GEOMETRIC_THRESHOLDS)
        elif self.params["backend"] == "py-feat":
            from importlib.metadata import PackageNotFoundError, version
            try:
                ident["py-feat"] = version("py-feat")
            except PackageNotFoundError:
                ident["py-feat"] = None
            ident["py-feat_au_model"] = PYFEAT_AU_MODEL
            ident["py-feat_threshold"] = PYFEAT_THRESHOLD
        return ident

    # -- per clip: (pred occurrence, labels) on the frames both sides can use ---------------------
    def _geometric(self, pair: ClipPair, side: str) -> tuple[np.ndarray, np.ndarray]:
        fields = pair.pred if side == "prediction" else pair.ref
        if "landmarks" not in fields:
            raise MetricError(f"{side} has no 'landmarks'")
        lm = np.asarray(fields["landmarks"], dtype=np.float64)
        points = tuple(int(p) for p in pair.points) if side == "prediction" else tuple(range(68))
        if lm.ndim != 3 or lm.shape[1:] != (len(points), 2):
            raise MetricError(f"{side} landmarks have shape {lm.shape}, expected "
                              f"T x {len(points)} x 2")
        missing = [p for p in _GEOMETRIC_POINTS if p not in points]
        if missing:
            raise MetricError(f"the geometric AU detector needs iBUG points {missing}, which the "
                              f"{side} does not cover")
        full = np.full((lm.shape[0], 68, 2), np.nan)
        full[:, list(points)] = lm
        mask = np.ones(lm.shape[0], dtype=bool)
        if pair.frame_mask is not None:
            fm = np.asarray(pair.frame_mask)
            if fm.shape != mask.shape or fm.dtype != bool:
                raise MetricError(f"frame_mask must be boolean of shape {mask.shape}, got "
                                  f"{fm.dtype} {fm.shape}")
            mask &= fm
        # points the features do not read may be NaN (a subset prediction): fill them from the
        # template position so only the needed points decide which frames are usable
        need = list(_GEOMETRIC_POINTS)
        mask &= np.isfinite(full[:, need]).all(axis=(1, 2))
        others = [p for p in range(68) if p not in _GEOMETRIC_POINTS]
        full[:, others] = 0.0
        return detect_geometric(full, mask)

    def _openface(self, pair: ClipPair, side: str, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
        folder = Path(self.params["csv_dir"]).expanduser() / ("pred" if side == "prediction" else "ref")
        path = folder / f"{pair.clip_id}.csv"
        if not path.is_file():
            raise MetricError(f"no OpenFace CSV for the {side}: {path}")
        return read_openface_csv(path, num_frames, float(self.params["min_confidence"]))

    def _py_feat(self, pair: ClipPair, side: str, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
        fields = pair.pred if side == "prediction" else pair.ref
        if "frames" not in fields:
            raise MetricError(f"backend py-feat needs the {side}'s frames")
        if len(fields["frames"]) != num_frames:
            raise MetricError(f"{side} has {len(fields['frames'])} frames, the clip {num_frames}")
        assert self._pyfeat is not None
        self._pyfeat.device = self.device
        return occurrence_from_fex(self._pyfeat.detect(fields["frames"]), num_frames)

    def _side(self, pair: ClipPair, side: str, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
        backend = self.params["backend"]
        if backend == "geometric":
            return self._geometric(pair, side)
        if backend == "py-feat":
            return self._py_feat(pair, side, num_frames)
        return self._openface(pair, side, num_frames)

    def clip_occurrence(self, pair: ClipPair) -> tuple[np.ndarray, np.ndarray]:
        """(predicted occurrence, labels), both N x 5 bool over the clip's usable frames."""
        if "landmarks" in pair.ref:
            num_frames = len(pair.ref["landmarks"])
        elif "frames" in pair.ref:
            num_frames = len(pair.ref["frames"])
        else:
            raise MetricError("reference has neither landmarks nor frames")
        pred, pred_ok = self._side(pair, "prediction", num_frames)
        if len(pred) != num_frames:
            raise MetricError(f"prediction has {len(pred)} frames, reference {num_frames}")
        if self.params["labels"] == "exact":
            if "aus" not in pair.ref:
                raise MetricError("labels: exact needs the reference's 'aus' (this dataset has no "
                                  "AU ground truth; use labels: detected)")
            labels = np.asarray(pair.ref["aus"])
            if labels.shape != (num_frames, len(AU_NAMES)):
                raise MetricError(f"reference aus have shape {labels.shape}, expected "
                                  f"({num_frames}, {len(AU_NAMES)}) in the order {AU_NAMES}")
            label_ok = np.ones(num_frames, dtype=bool)
            labels = labels.astype(bool)
        else:
            labels, label_ok = self._side(pair, "reference", num_frames)
        both = pred_ok & label_ok
        return pred[both], labels[both]

    def scores(self, pairs: Sequence[ClipPair]) -> dict[str, AUScore]:
        """Per-AU scores over the pooled usable frames of all clips (fills last_detail/notes)."""
        self.last_detail, self.last_notes = {}, []
        if not pairs:
            raise MetricError("no clips to score")
        preds, labels, skipped = [], [], {}
        for pair in pairs:
            try:
                p, y = self.clip_occurrence(pair)
            except MetricError as exc:
                skipped[pair.clip_id] = str(exc)
                continue
            preds.append(p)
            labels.append(y)
        if skipped:
            self.last_notes.append(f"{len(skipped)} of {len(pairs)} clip(s) skipped: " + "; ".join(
                f"{cid}: {why}" for cid, why in sorted(skipped.items())))
            log.warning("%s: %s", self.name, self.last_notes[-1])
        if not preds or sum(len(p) for p in preds) == 0:
            detail = "; ".join(f"{c}: {w}" for c, w in sorted(skipped.items())) or \
                "no frame where both sides have a detection"
            raise MetricError(f"no usable frame in any clip ({detail})")
        result = au_scores(np.concatenate(preds), np.concatenate(labels))
        self.last_detail = {name: s.as_dict() for name, s in result.items()}
        n = result[AU_NAMES[0]].n
        self.last_notes.append(f"{n} frame(s) from {len(preds)} clip(s)")
        return result

    def set_value(self, pairs: Sequence[ClipPair]) -> float:
        values = {name: self.value_of(s) for name, s in self.scores(pairs).items()}
        choice = self.params["au"]
        if choice != "all":
            if math.isnan(values[choice]):
                raise MetricError(f"{self.name} of {choice} is undefined: neither the labels nor "
                                  f"the prediction show {choice} on any frame")
            return float(values[choice])
        defined = {k: v for k, v in values.items() if not math.isnan(v)}
        undefined = sorted(set(values) - set(defined))
        if undefined:
            self.last_notes.append(f"left out of the average (never shown by labels or "
                                   f"prediction): {', '.join(undefined)}")
        if not defined:
            raise MetricError(f"{self.name} is undefined for every AU")
        return float(np.mean(list(defined.values())))

    def value_of(self, score: AUScore) -> float:
        raise NotImplementedError


@register
class AUF1(_AUMetric):
    """TCSAN Avg. F1: per-AU F1 over all test frames (labels: ground-truth detections), averaged."""

    name = "AU-F1"

    def value_of(self, score: AUScore) -> float:
        return score.f1


@register
class AUAcc(_AUMetric):
    """TCSAN Avg. Acc.: per-AU frame agreement with the labels over all test frames, averaged."""

    name = "AU-Acc"

    def value_of(self, score: AUScore) -> float:
        return score.accuracy


# --------------------------------------------------------------------------------------------
# Fitting the geometric thresholds on synthtalk (python -m metrics.au)
# --------------------------------------------------------------------------------------------

FIT_SPEAKERS = tuple(f"spk{i:02d}" for i in range(1, 9))  # fitted on these ...
HELD_OUT_SPEAKERS = tuple(f"spk{i:02d}" for i in range(9, 13))  # ... checked on these


def _corpus_features(clips, landmarks_of) -> tuple[np.ndarray, np.ndarray]:
    feats, labels = [], []
    for clip in clips:
        lm, mask = landmarks_of(clip)
        f = au_features(lm, mask)
        ok = np.isfinite(f).all(axis=1)
        feats.append(f[ok])
        labels.append(np.asarray(clip.aus, dtype=bool)[ok])
    return np.concatenate(feats), np.concatenate(labels)


def fit_report(size: str | int = "small", seed: int = 0, dlib: bool = False) -> dict:
    """Fit `GEOMETRIC_THRESHOLDS` on synthtalk and measure the detector against the exact labels.

    Thresholds are fitted on the exact 2D landmarks of `FIT_SPEAKERS`; F1 and accuracy are then
    reported on those (fit), on the exact landmarks of `HELD_OUT_SPEAKERS` (held out), and, with
    `dlib`, on dlib's detections on the rendered frames of the held-out speakers (what frame-only
    methods are scored with). An AU without a positive label among the fitting frames keeps its
    stored threshold (listed in "not_fitted"). Returns {"thresholds": {...}, "not_fitted": [...],
    "rows": {AU: {"threshold", "fit", "held_out"[, "held_out_dlib"]}}, "frames": {...}}.
    """
    from bench.data.synthtalk import corpus

    clips = corpus.load_clips(corpus.build(size=size, seed=seed, progress=False))
    fit_clips = [c for c in clips if c.speaker in FIT_SPEAKERS]
    held_clips = [c for c in clips if c.speaker in HELD_OUT_SPEAKERS]

    def exact(clip):
        return clip.landmarks, None

    f_fit, y_fit = _corpus_features(fit_clips, exact)
    thresholds, not_fitted = {}, []
    for k, name in enumerate(AU_NAMES):
        if y_fit[:, k].any():
            thresholds[name] = round(fit_threshold(f_fit[:, k], y_fit[:, k])[0], 3)
        else:  # too small a corpus: keep the stored threshold
            thresholds[name] = GEOMETRIC_THRESHOLDS[name]
            not_fitted.append(name)
    sets = {"fit": (f_fit, y_fit), "held_out": _corpus_features(held_clips, exact)}
    if dlib:
        from faces.extractors import DlibExtractor

        extractor = DlibExtractor(upsample=1)

        def detected(clip):
            result = extractor.detect(clip.frames)
            clip.release_frames()
            return np.nan_to_num(result.landmarks), result.found

        sets["held_out_dlib"] = _corpus_features(held_clips, detected)
    rows: dict[str, dict] = {name: {"threshold": thresholds[name]} for name in AU_NAMES}
    for key, (f, y) in sets.items():
        scores = au_scores(detect_from_features(f, thresholds), y)
        for name in AU_NAMES:
            rows[name][key] = {"f1": scores[name].f1, "accuracy": scores[name].accuracy,
                               "positives": int(y[:, AU_NAMES.index(name)].sum())}
    return {"thresholds": thresholds, "not_fitted": not_fitted, "rows": rows,
            "frames": {key: int(len(f)) for key, (f, _) in sets.items()},
            "corpus": {"size": size, "seed": seed}}


def format_fit_report(report: dict) -> str:
    keys = [k for k in ("fit", "held_out", "held_out_dlib") if k in report["frames"]]
    head = "AU    threshold  " + "  ".join(f"{k + ' F1 / acc':>24}" for k in keys)
    lines = [head]
    for name in AU_NAMES:
        row = report["rows"][name]
        cells = "  ".join(f"{row[k]['f1']:>14.3f} / {row[k]['accuracy']:.3f}" for k in keys)
        lines.append(f"{name}  {row['threshold']:>9.3f}  {cells}")
    macro = "  ".join(
        f"{np.nanmean([report['rows'][n][k]['f1'] for n in AU_NAMES]):>14.3f} / "
        f"{np.mean([report['rows'][n][k]['accuracy'] for n in AU_NAMES]):.3f}" for k in keys)
    lines.append(f"mean  {'':>9}  {macro}")
    lines.append("frames: " + ", ".join(f"{k} {v}" for k, v in report["frames"].items()))
    if report.get("not_fitted"):
        lines.append("no positive label to fit (stored threshold kept): "
                     + ", ".join(report["not_fitted"]))
    lines.append("GEOMETRIC_THRESHOLDS = " + repr(report["thresholds"]))
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m metrics.au",
        description="Fit the geometric AU detector's thresholds on synthtalk's exact AU labels "
                    "and report its per-AU F1 / accuracy.")
    parser.add_argument("--size", default="small", help="synthtalk corpus size (default small)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dlib", action="store_true",
                        help="also score dlib's landmarks on the rendered held-out frames (slow)")
    args = parser.parse_args(argv)
    size: str | int = int(args.size) if str(args.size).isdigit() else args.size
    print(format_fit_report(fit_report(size, args.seed, args.dlib)))


if __name__ == "__main__":
    main()
