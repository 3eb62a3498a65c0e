"""Scoring a set of predictions under a protocol: landmark source, metric values, failures.

Landmark metrics compare like with like (the papers' convention): a method that outputs landmarks
is compared with the protocol's reference landmarks; a method that outputs only frames is scored
from the landmarks the protocol's detector finds on its frames, against the same detector on the
ground-truth frames. Frames where either detection failed are left out and counted.

Set-level metrics (FID, AU-F1, AU-Acc) take one part per clip (`Metric.clip_parts`); a clip whose
part cannot be made is a counted failure, N is the clips that contributed, and the confidence
interval comes from resampling those clips and recomputing the set value from their parts (the
protocol's bootstrap settings). Their per-speaker and per-emotion values are computed here too,
since they cannot be derived from per-clip values later.

Head-motion metrics (Diversity, Beat Align) record the pose route of their values, the ground
truth through the same route and, for frame routes, the jitter floor of a still head
(`bench.motion_routes`); under a metric's ``convention: distance`` the value is the distance of the
row's mean to that reference.

Metrics whose weights are made for the protocol (`weights: syncnet_expert`) get their file from
`evaluators` (`bench.experts.resolve`), passed in explicitly: the protocol itself is never altered.
"""

from __future__ import annotations

import dataclasses
import logging
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from core.types import Prediction
from core import distributed
from core.cache import Cache
from core.hashing import array_digest, key_of
from core.types import Clip
from bench.data.clips import clip_hash
from bench.protocol import MetricSpec, Protocol
from bench.results import GROUPS, describe_metric
from bench.stats import bootstrap_ci, bootstrap_indices, percentile_interval
from core.types import ClipPair
from metrics import Metric, build_metric
from core.errors import MetricError, MetricUnavailable
from faces.extractors import LandmarkExtractor, build_extractor
from bench.motion_routes import RouteReferences, is_motion_metric, motion_entry

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
    # set-level metrics: each contributing clip's part, then the value over them
    parts: dict[str, object] = field(default_factory=dict)
    set_value: Optional[float] = None
    set_ci: tuple[Optional[float], Optional[float]] = (None, None)
    set_failure: Optional[str] = None  # why the set value could not be computed from the parts
    groups: dict[str, dict[str, dict]] = field(default_factory=dict)  # by -> group -> entry
    routes: dict[str, str] = field(default_factory=dict)  # head-motion metrics: clip id -> pose route


class Scorer:
    def __init__(self, protocol: Protocol, test_clips: list[Clip], device: str = "cpu",
                 cache: Optional[Cache] = None, evaluators: Optional[dict[str, dict]] = None,
                 metrics: Optional[tuple[MetricSpec, ...]] = None, motion_references: bool = True,
                 workers: int = 1) -> None:
        """Score `test_clips` under `protocol` with its metrics (or `metrics`, e.g. the sanity
        checks' list). `evaluators`: weights name -> {"path", "sha256", ...} of files made for
        this protocol (`bench.experts.resolve`); a metric whose `weights` parameter names one and
        gives no `weights_path` is built with that file. `motion_references`: give head-motion
        entries the ground truth through their route and the jitter floors (`bench.motion_routes`).
        `workers`: processes that score clips in parallel (`clip_results`; 1 = here)."""
        self.workers = max(1, int(workers))
        self._pool = None
        self.protocol = protocol
        self.motion_references = motion_references
        self.references = RouteReferences(self)
        self.clips = {c.id: c for c in test_clips}
        self.device = device
        self.cache = cache or Cache()
        self.evaluators = dict(evaluators or {})
        self.specs = tuple(protocol.metrics if metrics is None else metrics)
        self._extractor: Optional[LandmarkExtractor] = None
        self.metrics: list[tuple[MetricSpec, Optional[Metric], Optional[str]]] = []
        for spec in self.specs:
            try:
                metric = build_metric(spec.name, self.metric_params(spec))
                metric.device = device
                metric.cache = self.cache  # what rows share: e.g. the ground truth's FID features
                self.metrics.append((spec, metric, None))
            except MetricUnavailable as exc:
                self.metrics.append((spec, None, str(exc)))

    def metric_params(self, spec: MetricSpec) -> dict:
        """The parameters a metric is built with: the protocol's, plus an evaluator's file."""
        name = spec.params.get("weights")
        if isinstance(name, str) and name in self.evaluators and not spec.params.get("weights_path"):
            return {**spec.params, "weights_path": str(self.evaluators[name]["path"])}
        return dict(spec.params)

    # -- landmarks ------------------------------------------------------------------------------
    @property
    def extractor(self) -> LandmarkExtractor:
        if self._extractor is None:
            pre = self.protocol.preprocessing
            self._extractor = build_extractor(pre["landmark_backend"], **pre.get("landmark_params", {}))
        return self._extractor

    def detect(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Detector landmarks (T x 68 x 2, NaN where missed) and the found mask, cached under the
        frames' content: frames are detected once whoever shows them (the reference, a row whose
        prediction is the ground truth, the ground truth through a head-motion route, the same
        prediction scored from another folder)."""
        key = key_of("detect", self.extractor.cache_identity(), array_digest(frames))
        cached = self.cache.get_arrays("landmarks", key)
        if cached is None:
            result = self.extractor.detect(frames)
            cached = {"landmarks": result.landmarks, "found": result.found}
            self.cache.put_arrays("landmarks", key, cached)
        return cached["landmarks"], cached["found"].astype(bool)

    def reference_detection(self, clip: Clip) -> tuple[np.ndarray, np.ndarray]:
        return self.detect(clip.frames)

    def landmark_source(self, pred: Prediction) -> str:
        return self.source_for(pred.fields())

    def source_for(self, fields: set[str]) -> str:
        """Where the landmarks of a prediction holding `fields` come from: "predicted" (its own) or
        "detected" (the protocol's detector on its frames). The one place the rule is written."""
        mode = self.protocol.landmarks_from
        if mode == "auto":
            return "predicted" if "landmarks" in fields else "detected"
        return mode

    def scored_fields(self, fields: set[str], reference_frames: bool = True) -> set[str]:
        """The fields a metric can read from a prediction holding `fields`: detected landmarks need
        its frames and the reference's; under "detected" its own landmarks are not used."""
        out = set(fields)
        if self.source_for(fields) == "detected":
            if "frames" in fields and reference_frames:
                out.add("landmarks")
            else:
                out.discard("landmarks")
        return out

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
            pred_lmk, pred_found = self.detect(pred.frames)
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
        have = self.scored_fields(set(outputs))
        missing = [f for f in metric.needs if f not in have]
        return f"the method outputs no {', '.join(missing)}" if missing else None

    def score(self, predictions: dict[str, Prediction], pred_keys: dict[str, str],
              prediction_failures: dict[str, str], outputs: set[str],
              frame_sources: Optional[dict[str, str]] = None) -> list[MetricOutcome]:
        """Per-clip values of every metric; every clip ends as a value or a counted failure.
        `frame_sources`: clip id -> "mp4" for predictions whose frames were decoded from an mp4 (a
        part of head-motion routes).

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
        active = [i for i, o in enumerate(outcomes) if o.metric is not None and not o.not_applicable]
        todo = [c for c in self.clips if c not in prediction_failures and c in predictions]
        results = self.clip_results(todo, predictions, pred_keys, active, frame_sources or {})
        for clip_id in self.clips:  # assembled in clip order whoever computed them: one result
            if clip_id not in results:
                reason = prediction_failures.get(clip_id, "no prediction")
                for outcome in outcomes:
                    if outcome.unavailable is None and outcome.not_applicable is None:
                        outcome.failures[clip_id] = reason
                continue
            for i, got in results[clip_id].items():
                outcome = outcomes[i]
                if got[0] == "failure":
                    outcome.failures[clip_id] = got[1]
                elif got[0] == "part":
                    outcome.parts[clip_id] = got[1]
                else:
                    _, value, note, route = got
                    outcome.per_clip[clip_id] = value
                    if route is not None:
                        outcome.routes[clip_id] = route
                    if note:
                        outcome.notes.append(f"clip {clip_id}: {note}")
        for outcome in outcomes:
            metric = outcome.metric
            if metric is not None and metric.level == "set" and not outcome.not_applicable:
                self._score_set(outcome)
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

    def clip_results(self, clip_ids: list[str], predictions: dict[str, Prediction],
                     pred_keys: dict[str, str], active: list[int],
                     frame_sources: dict[str, str]) -> dict[str, dict[int, tuple]]:
        """`score_clip` of every clip in `clip_ids`, by clip id: here, in this scorer's worker
        processes (`workers`), and/or split over the ranks of a torch.distributed group (each rank
        scores its share, every rank gets all of them). Each clip's result depends only on the
        clip, so who computed it does not change it."""
        w = distributed.world()
        mine = distributed.shard(sorted(clip_ids), w)
        jobs = [(c, predictions[c], pred_keys[c], frame_sources.get(c)) for c in mine]
        local: dict[str, dict[int, tuple]] = {}
        if self.workers > 1 and len(jobs) > 1:
            pool = self.pool()
            payload = [(self.portable_clip(self.clips[c]), pred, key, active, source)
                       for c, pred, key, source in jobs]
            for (c, *_), got in zip(jobs, pool.map(score_in_worker, payload)):
                local[c] = got
        else:
            for c, pred, key, source in jobs:
                local[c] = self.score_clip(self.clips[c], pred, key, active, source)
                self.clips[c].release_frames()
        if not w.distributed:
            return local
        merged: dict[str, dict[int, tuple]] = {}
        for part in distributed.gather(local, w):
            merged.update(part)
        return merged

    def score_clip(self, clip: Clip, pred: Prediction, pred_key: str, active: list[int],
                   frame_source: Optional[str] = None) -> dict[int, tuple]:
        """One clip's result for every metric index in `active` (indices into `self.metrics`):
        ("value", v, note, route), ("part", set-level part) or ("failure", reason)."""
        out: dict[int, tuple] = {}
        pair: Optional[ClipPair] = None
        source = self.landmark_source(pred)
        have = self.scored_fields(pred.fields(), clip.has_frames)
        for i in active:
            metric = self.metrics[i][1]
            missing = [f for f in metric.needs if f not in have]
            if missing:
                out[i] = ("failure", f"prediction has no {', '.join(missing)}")
                continue
            if metric.level == "set":
                if pair is None:
                    pair = self.pair(clip, pred, pred_key)
                out[i] = self.clip_part(metric, pair)
                continue
            key = key_of("metric", metric.identity(), clip_hash(clip), pred_key, source,
                         self._extractor_identity(pred, metric))
            if pair is None and self.cache.get_json("metric", key) is None:
                pair = self.pair(clip, pred, pred_key)
            cached = self.clip_value(metric, key, lambda: pair)
            if "value" in cached:
                route = metric.route(source, frame_source) if is_motion_metric(metric) else None
                out[i] = ("value", cached["value"], cached.get("note"), route)
            else:
                out[i] = ("failure", cached["error"])
        return out

    # -- worker processes ---------------------------------------------------------------------------
    def worker_state(self) -> dict:
        """What a worker process needs to build this scorer's twin (its own metrics and models)."""
        return {"protocol": self.protocol, "device": self.device, "cache": str(self.cache.root),
                "evaluators": self.evaluators, "metrics": self.specs,
                "motion_references": self.motion_references}

    def pool(self):
        """This scorer's worker processes (spawned once, each with its own scorer, one torch thread)."""
        if self._pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(max_workers=self.workers,
                                             mp_context=multiprocessing.get_context("spawn"),
                                             initializer=init_worker, initargs=(self.worker_state(),))
        return self._pool

    def close(self) -> None:
        """Stop the worker processes, if any were started."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    @staticmethod
    def portable_clip(clip: Clip) -> Clip:
        """`clip` as it can travel to a worker: as it is when it pickles (its frames are then made
        there), else with its frames loaded here (a frame loader that is a closure)."""
        try:
            pickle.dumps(clip.frames_loader)
            return clip
        except Exception:
            frames = clip.frames if clip.has_frames else None
            clip.release_frames()
            return dataclasses.replace(clip, frames_loader=None, _frames=frames)

    @staticmethod
    def clip_part(metric: Metric, pair: ClipPair) -> tuple:
        """One clip's part of a set-level metric, or its counted failure."""
        try:
            return ("part", metric.clip_parts(pair))
        except MetricError as exc:
            return ("failure", str(exc))
        except Exception as exc:  # a crash on one clip is that clip's failure, not the run's
            log.exception("metric %s failed on %s", metric.name, pair.clip_id)
            return ("failure", f"{type(exc).__name__}: {exc}")

    def _score_set(self, outcome: MetricOutcome) -> None:
        """The set value over the contributing clips, its bootstrap CI and its per-group values."""
        metric, ids = outcome.metric, list(outcome.parts)
        if not ids:
            return  # every clip failed, each counted
        try:
            outcome.set_value = float(metric.set_value_from_parts([outcome.parts[c] for c in ids]))
        except MetricError as exc:
            outcome.set_failure = str(exc)
            return
        finally:
            outcome.notes.extend(getattr(metric, "last_notes", []))  # e.g. FID below 2048 frames
        outcome.set_ci, used = self.set_interval(metric, [outcome.parts[c] for c in ids])
        samples = self.protocol.bootstrap["set_samples"]
        if used < samples:
            outcome.notes.append(f"bootstrap CI from the {used} of {samples} resamples of clips "
                                 f"that have a value")
        for by in GROUPS:
            members: dict[str, list[str]] = {}
            for c in ids:
                members.setdefault(str(getattr(self.clips[c], by)), []).append(c)
            outcome.groups[by] = {}
            for group, clips in sorted(members.items()):
                parts = [outcome.parts[c] for c in clips]
                try:
                    value: Optional[float] = float(metric.set_value_from_parts(parts))
                    ci, _ = self.set_interval(metric, parts)
                except MetricError as exc:
                    value, ci = None, (None, None)
                    log.info("%s: no value for %s %s (%s)", metric.name, by, group, exc)
                outcome.groups[by][group] = {"value": value, "ci": list(ci), "n": len(clips)}

    def set_interval(self, metric: Metric, parts: list) -> tuple[tuple[Optional[float], Optional[float]], int]:
        """Percentile bootstrap CI of a set-level metric over clips (resampled with the protocol's
        settings, the set value recomputed from the clips' parts) and how many resamples had a
        value."""
        boot = self.protocol.bootstrap
        indices = bootstrap_indices(len(parts), boot["set_samples"], boot["seed"])
        values = np.asarray(metric.resampled_set_values(parts, indices), dtype=np.float64)
        used = int((~np.isnan(values)).sum())
        lo, hi = percentile_interval(values, boot["confidence"])
        return ((None, None) if used == 0 else (lo, hi)), used

    @staticmethod
    def _main_route(outcome: MetricOutcome):
        found = sorted(set(outcome.routes.values()))
        return found[0] if len(found) == 1 else (found or None)

    def _extractor_identity(self, pred: Prediction, metric: Metric) -> Optional[dict]:
        if "landmarks" in metric.needs and self.landmark_source(pred) == "detected":
            return self.extractor.cache_identity()
        return None

    def aggregate(self, outcome: MetricOutcome) -> dict:
        """The result entry of one metric: what it is (label, name, direction, unit, level), its
        value with CI and N, failures, per-clip values (clip level) or contributing clips and
        per-group values (set level)."""
        metric, boot, spec = outcome.metric, self.protocol.bootstrap, outcome.spec
        params = metric.params if metric else self.metric_params(spec)
        entry = describe_metric(spec.name, spec.label, params)
        values = [v for _, v in sorted(outcome.per_clip.items())]
        if entry["level"] == "set":  # N: the clips whose parts the value was computed from
            value, ci = outcome.set_value, outcome.set_ci
            n = len(outcome.parts) if value is not None else 0
        elif values:
            value = metric.aggregate(values)
            ci = bootstrap_ci(values, boot["samples"], boot["seed"], boot["confidence"])
            n = len(values)
        else:
            value, ci, n = None, (None, None), 0
        entry.update({
            "params": params,
            "version": metric.version if metric else None,
            "value": value,
            "ci": list(ci),
            "n": n,
            "failures": len(outcome.failures),
            "failure_reasons": dict(sorted(outcome.failures.items())),
            "unavailable": outcome.unavailable,
            "not_applicable": outcome.not_applicable,
            "notes": list(outcome.notes),
            "weights": metric.identity().get("weights") if metric else None,  # name -> sha256
            "per_clip": dict(sorted(outcome.per_clip.items())),
        })
        if is_motion_metric(metric) and entry["level"] == "clip":
            extra = motion_entry(self.references, metric, outcome.routes, outcome.per_clip, boot,
                                 floors=self.motion_references) if self.motion_references or \
                metric.params.get("convention") == "distance" else {"route": self._main_route(outcome)}
            entry.update(extra)
            if "distance" in extra:  # the value is the distance to the reference; the raw mean stays
                entry.update({"raw_value": entry["value"], "raw_ci": entry["ci"], "value": extra["distance"]["value"],
                              "ci": extra["distance"]["ci"]})
        if entry["level"] == "set":
            entry.update({"clips": sorted(outcome.parts), "set_failure": outcome.set_failure,
                          "groups": outcome.groups})
        return entry


# One scorer per worker process, built by `init_worker` when the pool starts.
WORKER: dict[str, Scorer] = {}


def init_worker(state: dict) -> None:
    import torch

    torch.set_num_threads(1)  # the processes are the parallelism
    WORKER["scorer"] = Scorer(state["protocol"], [], state["device"], cache=Cache(Path(state["cache"])),
                              evaluators=state["evaluators"], metrics=state["metrics"],
                              motion_references=state["motion_references"])


def score_in_worker(job: tuple) -> dict[int, tuple]:
    clip, pred, pred_key, active, source = job
    try:
        return WORKER["scorer"].score_clip(clip, pred, pred_key, active, source)
    finally:
        clip.release_frames()
