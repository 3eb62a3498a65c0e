"""Scoring a set of predictions under a protocol: landmark source, metric values, failures.

Landmark metrics compare like with like (the papers' convention): a method that outputs landmarks
is compared with the protocol's reference landmarks; a method that outputs only frames is scored
from the landmarks the protocol's detector finds on its frames, against the same detector on the
ground-truth frames. Frames where either detection failed are left out and counted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from core.types import Prediction
from core.cache import Cache
from core.hashing import key_of
from core.types import Clip
from bench.data.clips import clip_hash
from bench.protocol import MetricSpec, Protocol
from bench.stats import bootstrap_ci
from core.types import ClipPair
from metrics import Metric, build_metric
from core.errors import MetricError, MetricUnavailable
from faces.extractors import LandmarkExtractor, build_extractor

log = logging.getLogger(__name__)


@dataclass
class MetricOutcome:
    spec: MetricSpec
    metric: Optional[Metric]
    per_clip: dict[str, float] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    unavailable: Optional[str] = None
    not_applicable: Optional[str] = None
    notes: list[str] = field(default_factory=list)


class Scorer:
    def __init__(self, protocol: Protocol, test_clips: list[Clip], device: str = "cpu",
                 cache: Optional[Cache] = None) -> None:
        self.protocol = protocol
        self.clips = {c.id: c for c in test_clips}
        self.device = device
        self.cache = cache or Cache()
        self._extractor: Optional[LandmarkExtractor] = None
        self.metrics: list[tuple[MetricSpec, Optional[Metric], Optional[str]]] = []
        for spec in protocol.metrics:
            try:
                metric = build_metric(spec.name, spec.params)
                metric.device = device
                self.metrics.append((spec, metric, None))
            except MetricUnavailable as exc:
                self.metrics.append((spec, None, str(exc)))

    # -- landmarks ------------------------------------------------------------------------------
    @property
    def extractor(self) -> LandmarkExtractor:
        if self._extractor is None:
            pre = self.protocol.preprocessing
            self._extractor = build_extractor(pre["landmark_backend"], **pre.get("landmark_params", {}))
        return self._extractor

    def detect(self, frames: np.ndarray, content_key: str) -> tuple[np.ndarray, np.ndarray]:
        """Detector landmarks (T x 68 x 2, NaN where missed) and the found mask, cached."""
        key = key_of("detect", self.extractor.cache_identity(), content_key)
        cached = self.cache.get_arrays("landmarks", key)
        if cached is None:
            result = self.extractor.detect(frames)
            cached = {"landmarks": result.landmarks, "found": result.found}
            self.cache.put_arrays("landmarks", key, cached)
        return cached["landmarks"], cached["found"].astype(bool)

    def reference_detection(self, clip: Clip) -> tuple[np.ndarray, np.ndarray]:
        return self.detect(clip.frames, "reference:" + clip_hash(clip))

    def landmark_source(self, pred: Prediction) -> str:
        mode = self.protocol.landmarks_from
        if mode == "auto":
            return "predicted" if pred.landmarks is not None else "detected"
        return mode

    def pair(self, clip: Clip, pred: Prediction, pred_key: str) -> ClipPair:
        ref: dict[str, np.ndarray] = {"landmarks": clip.landmarks}
        out: dict[str, np.ndarray] = {}
        points, mask, meta = pred.points, None, {}
        for name in ("frames", "pose", "motion"):
            if getattr(pred, name) is not None:
                out[name] = getattr(pred, name)
        if clip.has_frames and "frames" in out:
            ref["frames"] = clip.frames
        for name in ("pose", "motion", "aus"):
            if getattr(clip, name) is not None:
                ref[name] = getattr(clip, name)
        source = self.landmark_source(pred)
        if source == "predicted" and pred.landmarks is not None:
            out["landmarks"] = pred.landmarks
            # Gap-filled reference frames (no face found in the data) are not ground truth.
            mask = clip.landmarks_found
        elif source == "detected" and pred.frames is not None and clip.has_frames:
            pred_lmk, pred_found = self.detect(pred.frames, "prediction:" + pred_key)
            ref_lmk, ref_found = self.reference_detection(clip)
            out["landmarks"], ref["landmarks"], points = pred_lmk, ref_lmk, tuple(range(68))
            mask = pred_found & ref_found
            meta = {"detector_misses_pred": int((~pred_found).sum()),
                    "detector_misses_ref": int((~ref_found).sum())}
            # NaN rows of missed frames are excluded by the mask; replace them so they cannot leak.
            out["landmarks"] = np.where(mask[:, None, None], pred_lmk, 0.0)
            ref["landmarks"] = np.where(mask[:, None, None], ref_lmk, 0.0)
        return ClipPair(clip.id, out, ref, points=points, frame_mask=mask, fps=clip.fps,
                        audio=clip.audio, sample_rate=clip.sample_rate,
                        meta={"landmark_source": source, **meta})

    # -- metrics --------------------------------------------------------------------------------
    def applicable(self, metric: Metric, outputs: set[str]) -> Optional[str]:
        """Why a metric does not apply to a method with these outputs (None if it does)."""
        have = set(outputs)
        if "frames" in have and self.protocol.landmarks_from != "predicted":
            have.add("landmarks")  # the detector finds them on the frames
        if self.protocol.landmarks_from == "detected" and "frames" not in outputs:
            have.discard("landmarks")
        missing = [f for f in metric.needs if f not in have]
        return f"the method outputs no {', '.join(missing)}" if missing else None

    def score(self, predictions: dict[str, Prediction], pred_keys: dict[str, str],
              prediction_failures: dict[str, str], outputs: set[str]) -> list[MetricOutcome]:
        """Per-clip values of every metric; every clip ends as a value or a counted failure.

        A metric that needs an output the method does not declare (PSNR of a landmark-only
        method) is marked not applicable for the whole row instead of failing on every clip.
        """
        outcomes = [MetricOutcome(spec, metric, unavailable=why) for spec, metric, why in self.metrics]
        predicted = [p for p in predictions.values() if self.landmark_source(p) == "predicted"]
        # the points every landmark prediction covers (methods like SPEAR predict the lower face only)
        coverage = set(range(68)).intersection(*(p.points for p in predicted)) if predicted else None
        for outcome in outcomes:
            if outcome.metric is not None:
                outcome.not_applicable = self.applicable(outcome.metric, outputs)
                if outcome.not_applicable is None and coverage is not None \
                        and "landmarks" in outcome.metric.needs:
                    outcome.not_applicable = outcome.metric.points_problem(tuple(sorted(coverage)))
        for clip_id, clip in self.clips.items():
            if clip_id in prediction_failures or clip_id not in predictions:
                reason = prediction_failures.get(clip_id, "no prediction")
                for outcome in outcomes:
                    if outcome.unavailable is None and outcome.not_applicable is None:
                        outcome.failures[clip_id] = reason
                continue
            pred, pred_key = predictions[clip_id], pred_keys[clip_id]
            pair: Optional[ClipPair] = None
            for outcome in outcomes:
                metric = outcome.metric
                if metric is None or metric.level != "clip" or outcome.not_applicable:
                    continue
                missing = [f for f in metric.needs if f not in _available_fields(pred, clip, self)]
                if missing:
                    outcome.failures[clip_id] = f"prediction has no {', '.join(missing)}"
                    continue
                key = key_of("metric", metric.identity(), clip_hash(clip), pred_key,
                             self.landmark_source(pred), self._extractor_identity(pred, metric))
                if pair is None and self.cache.get_json("metric", key) is None:
                    pair = self.pair(clip, pred, pred_key)
                cached = self.clip_value(metric, key, lambda: pair)
                if "value" in cached:
                    outcome.per_clip[clip_id] = cached["value"]
                    if cached.get("note"):
                        outcome.notes.append(f"clip {clip_id}: {cached['note']}")
                else:
                    outcome.failures[clip_id] = cached["error"]
            clip.release_frames()
        for outcome in outcomes:
            metric = outcome.metric
            if metric is not None and metric.level == "set" and not outcome.not_applicable:
                self._score_set(outcome, predictions, pred_keys)
        return outcomes

    def clip_value(self, metric: Metric, key: str, make_pair) -> dict:
        """{"value": v} or {"error": reason} for one clip, from the cache or computed and cached."""
        cached = self.cache.get_json("metric", key)
        if cached is None:
            try:
                pair = make_pair()
                cached = {"value": float(metric.clip_value(pair))}
                # per-clip notes (e.g. BeatAlign: "no motion beat: score 0") travel with the value
                notes = getattr(metric, "notes", None)  # clip id -> note, kept by some metrics
                note = notes.get(pair.clip_id) if isinstance(notes, dict) else None
                if note:
                    cached["note"] = note
            except MetricError as exc:
                cached = {"error": str(exc)}
            except Exception as exc:  # a detector or metric crash is this clip's failure, not the run's
                log.exception("metric %s failed", metric.name)
                cached = {"error": f"{type(exc).__name__}: {exc}"}
            self.cache.put_json("metric", key, cached)
        return cached

    def _score_set(self, outcome: MetricOutcome, predictions: dict[str, Prediction],
                   pred_keys: dict[str, str]) -> None:
        pairs = [self.pair(self.clips[c], p, pred_keys[c]) for c, p in predictions.items()]
        try:
            outcome.per_clip["__set__"] = float(outcome.metric.set_value(pairs))
        except MetricError as exc:
            outcome.failures["__set__"] = str(exc)
        outcome.notes.extend(getattr(outcome.metric, "last_notes", []))  # e.g. FID below 2048 frames

    def _extractor_identity(self, pred: Prediction, metric: Metric) -> Optional[dict]:
        if "landmarks" in metric.needs and self.landmark_source(pred) == "detected":
            return self.extractor.cache_identity()
        return None

    def aggregate(self, outcome: MetricOutcome) -> dict:
        metric, boot = outcome.metric, self.protocol.bootstrap
        values = [v for k, v in sorted(outcome.per_clip.items()) if k != "__set__"]
        if "__set__" in outcome.per_clip:
            value, ci = outcome.per_clip["__set__"], (None, None)
        elif values:
            value = metric.aggregate(values)
            ci = bootstrap_ci(values, boot["samples"], boot["seed"], boot["confidence"])
        else:
            value, ci = None, (None, None)
        return {
            "name": outcome.spec.name,
            "params": metric.params if metric else outcome.spec.params,
            "version": metric.version if metric else None,
            # the class knows the direction even when the metric could not be built here
            "higher_is_better": metric.higher_is_better if metric else _direction(outcome.spec.name),
            "value": value,
            "ci": list(ci),
            "n": len(values),
            "failures": len(outcome.failures),
            "failure_reasons": dict(sorted(outcome.failures.items())),
            "unavailable": outcome.unavailable,
            "not_applicable": outcome.not_applicable,
            "notes": list(outcome.notes),
            "weights": metric.identity().get("weights") if metric else None,  # name -> sha256
            "per_clip": dict(sorted(outcome.per_clip.items())),
        }


def _direction(name: str) -> Optional[bool]:
    from metrics import METRICS

    cls = METRICS.get(name)
    return getattr(cls, "higher_is_better", None) if cls else None


def _available_fields(pred: Prediction, clip: Clip, scorer: Scorer) -> set[str]:
    fields = pred.fields()
    if "landmarks" not in fields and "frames" in fields and clip.has_frames \
            and scorer.landmark_source(pred) == "detected":
        fields.add("landmarks")
    if scorer.landmark_source(pred) == "detected" and "frames" not in fields:
        fields.discard("landmarks")
    return fields
