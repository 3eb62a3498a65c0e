"""AU-F1 and AU-Acc (TCSAN protocol, `reference/metrics.md` §4).

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

Backends (``backend``): ``geometric`` (default; needs ``landmarks``), the landmark-geometry detector
of `metrics.au.detector`; ``openface-csv`` and ``py-feat`` (need ``frames``), the external detectors
of `metrics.au.external`. Their modules describe each.
"""

from __future__ import annotations

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
from metrics.au.detector import (ALIGN_POINTS, AU_NAMES, FEATURE_POINTS, GEOMETRIC_THRESHOLDS,
                                 detect_geometric)
from metrics.au.external import (PYFEAT_AU_MODEL, PYFEAT_THRESHOLD, PyFeatAUDetector,
                                 occurrence_from_fex, read_openface_csv)

log = logging.getLogger(__name__)

AU_CHOICES = ("all",) + AU_NAMES
LABEL_SOURCES = ("detected", "exact")
BACKENDS = ("geometric", "openface-csv", "py-feat")


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

    def clip_parts(self, pair: ClipPair) -> tuple[np.ndarray, np.ndarray]:
        """The clip's (predicted occurrence, labels) on its usable frames; MetricError if none."""
        pred, labels = self.clip_occurrence(pair)
        if len(pred) == 0:
            raise MetricError("no frame where both sides have a detection")
        return pred, labels

    def scores(self, pairs: Sequence[ClipPair]) -> dict[str, AUScore]:
        """Per-AU scores over the pooled usable frames of all clips (fills last_detail/notes)."""
        if not pairs:
            raise MetricError("no clips to score")
        parts, skipped = self._parts(pairs)
        result = self.scores_from_parts(parts)
        self.last_notes = skipped + self.last_notes
        return result

    def _parts(self, pairs: Sequence[ClipPair]) -> tuple[list, list[str]]:
        """Parts of the clips that have usable frames, and the note naming those skipped."""
        parts, skipped = [], {}
        for pair in pairs:
            try:
                parts.append(self.clip_parts(pair))
            except MetricError as exc:
                skipped[pair.clip_id] = str(exc)
        notes = []
        if skipped:
            notes.append(f"{len(skipped)} of {len(pairs)} clip(s) skipped: " + "; ".join(
                f"{cid}: {why}" for cid, why in sorted(skipped.items())))
            log.warning("%s: %s", self.name, notes[-1])
        if not parts:
            detail = "; ".join(f"{c}: {w}" for c, w in sorted(skipped.items()))
            raise MetricError(f"no usable frame in any clip ({detail})")
        return parts, notes

    def scores_from_parts(self, parts: Sequence[tuple[np.ndarray, np.ndarray]]) -> dict[str, AUScore]:
        """Per-AU scores over the pooled frames of these clip parts (fills last_detail/notes)."""
        self.last_detail, self.last_notes = {}, []
        if not parts or sum(len(p) for p, _ in parts) == 0:
            raise MetricError("no usable frame in any clip (no frame where both sides have a detection)")
        result = au_scores(np.concatenate([p for p, _ in parts]), np.concatenate([y for _, y in parts]))
        self.last_detail = {name: s.as_dict() for name, s in result.items()}
        n = result[AU_NAMES[0]].n
        self.last_notes.append(f"{n} frame(s) from {len(parts)} clip(s)")
        return result

    def set_value(self, pairs: Sequence[ClipPair]) -> float:
        if not pairs:
            raise MetricError("no clips to score")
        parts, skipped = self._parts(pairs)
        value = self.set_value_from_parts(parts)
        self.last_notes = skipped + self.last_notes
        return value

    def set_value_from_parts(self, parts: Sequence[tuple[np.ndarray, np.ndarray]]) -> float:
        values = {name: self.value_of(s) for name, s in self.scores_from_parts(parts).items()}
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

    def resampled_set_values(self, parts: Sequence[tuple[np.ndarray, np.ndarray]],
                             indices: np.ndarray) -> np.ndarray:
        """Set values of bootstrap resamples of clips, from each clip's confusion counts (they
        add up over pooled frames): the same numbers as `set_value_from_parts` of each resample."""
        counts = np.stack([[[s.tp, s.fp, s.fn, s.tn] for s in au_scores(p, y).values()]
                           for p, y in parts]).astype(np.float64)  # clips x AUs x 4
        mult = np.zeros((len(indices), len(parts)))
        np.add.at(mult, (np.arange(len(indices))[:, None], indices), 1.0)
        tp, fp, fn, tn = np.moveaxis(np.einsum("sc,cak->sak", mult, counts), -1, 0)  # each S x AUs
        with np.errstate(invalid="ignore", divide="ignore"):
            values = self.values_of_counts(tp, fp, fn, tn)
        choice = self.params["au"]
        if choice != "all":
            return values[:, AU_NAMES.index(choice)]
        out = np.full(len(indices), np.nan)
        defined = ~np.isnan(values)
        for s in np.flatnonzero(defined.any(axis=1)):  # the mean over the AUs with a value
            out[s] = float(np.mean(values[s][defined[s]]))
        return out

    def value_of(self, score: AUScore) -> float:
        raise NotImplementedError

    def values_of_counts(self, tp: np.ndarray, fp: np.ndarray, fn: np.ndarray,
                         tn: np.ndarray) -> np.ndarray:
        """`value_of` on arrays of counts (NaN where undefined)."""
        raise NotImplementedError


@register
class AUF1(_AUMetric):
    """TCSAN Avg. F1: per-AU F1 over all test frames (labels: ground-truth detections), averaged."""

    name = "AU-F1"

    def value_of(self, score: AUScore) -> float:
        return score.f1

    def values_of_counts(self, tp, fp, fn, tn):
        denom = 2 * tp + fp + fn
        return np.where(denom > 0, 2 * tp / denom, np.nan)


@register
class AUAcc(_AUMetric):
    """TCSAN Avg. Acc.: per-AU frame agreement with the labels over all test frames, averaged."""

    name = "AU-Acc"

    def value_of(self, score: AUScore) -> float:
        return score.accuracy

    def values_of_counts(self, tp, fp, fn, tn):
        n = tp + fp + fn + tn
        return np.where(n > 0, (tp + tn) / n, np.nan)
