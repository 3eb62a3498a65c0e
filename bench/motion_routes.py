"""Head-motion values read through their pose route: the ground truth through the same route and
the jitter floor (issue 16).

A head-motion metric (`metrics.motion`) measures the pose a route produces, not the head alone: PnP
on a detector's landmarks adds the detector's per-frame jitter, an H.264 encoding moves the
detections again, Hopenet has its own noise. So every row's motion value is given with

* its **route** (`metrics.motion.pose_route`): given pose, PnP on the prediction's landmarks, PnP on
  landmarks detected on its frames, Hopenet on its frames (``+mp4`` when the frames were decoded
  from an mp4);
* the **ground truth through the same route**: the ground-truth clip fed to the same estimator the
  same way (its exact pose, its exact landmarks, or its frames through the protocol's detector and
  the estimator, re-encoded with talkbench's H.264 settings for a ``+mp4`` route), which is the
  column's reference: scoring the ground-truth mp4s alone gives exactly these values;
* the **jitter floor** of a frame route: the metric on a head that does not move, through the same
  route. Two still heads: ``static`` (the clip's first frame repeated, what the `static` method
  outputs; a deterministic detector on identical frames gives exactly 0 unless an encoding makes
  the frames differ) and, where the dataset can re-render its clips (synthtalk: 3D landmarks, head
  pose and appearance), ``talking`` (the clip re-rendered with its speech, blinks and expressions
  but the head pose frozen at the first frame). What a still head scores is what the estimator
  alone contributes.

Every per-clip value is cached like the scorer's (metric identity with its code fingerprint, clip
content, route, detector identity, encoding settings), so the references are computed once per
route and reused by every row and every run.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from bench.data.clips import clip_hash
from bench.data.video import read_video, write_mp4
from bench.stats import bootstrap_ci, bootstrap_indices, percentile_interval
from core.hashing import key_of
from core.types import Clip, ClipPair
from metrics.motion import MP4, is_frame_route

MP4_RECIPE = {"codec": "libx264", "crf": 18, "preset": "veryfast", "pix_fmt": "yuv420p"}  # write_mp4's
STILL_HEADS = ("static", "talking")


def is_motion_metric(metric) -> bool:
    """A metric that reads head pose through a route (has `route`)."""
    return metric is not None and callable(getattr(metric, "route", None))


def through_mp4(frames: np.ndarray, fps: float) -> np.ndarray:
    """Frames as they come back from talkbench's own mp4 (`bench.data.video.write_mp4`, H.264 crf
    18): what a prediction handed in as an mp4 went through."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clip.mp4"
        write_mp4(path, frames, fps)
        return read_video(path, sample_rate=None).frames


def can_hold_still(clip: Clip, kind: str) -> bool:
    """Whether `still_frames` can make this still head for the clip (without rendering it)."""
    if kind == "static":
        return clip.has_frames
    return (clip.has_frames and clip.landmarks3d is not None and clip.pose is not None
            and clip.meta.get("appearance") is not None)


def still_frames(clip: Clip, kind: str) -> Optional[np.ndarray]:
    """Frames of the clip's head held still: "static" (first frame repeated) or "talking" (re-rendered
    with the pose frozen at the first frame; None where the dataset cannot re-render)."""
    if not clip.has_frames:
        return None
    if kind == "static":
        return np.repeat(clip.frames[:1], clip.num_frames, axis=0)
    if kind != "talking":
        raise ValueError(f"still head must be one of {STILL_HEADS}, got {kind!r}")
    look = clip.meta.get("appearance")
    if clip.landmarks3d is None or clip.pose is None or look is None:
        return None
    from bench.data.synthtalk.face import project
    from bench.data.synthtalk.render import render_frames

    pose = np.repeat(np.asarray(clip.pose[:1], np.float64), clip.num_frames, axis=0)
    lmk = project(np.asarray(clip.landmarks3d, np.float64), pose)
    return render_frames(lmk, look, size=int(clip.frames.shape[2]))


class RouteReferences:
    """Per-clip motion values of the ground truth and of still heads through a route, cached.

    `scorer` is the `bench.scoring.Scorer` of the clips (its cache, clip value helper and detector)."""

    def __init__(self, scorer) -> None:
        self.scorer = scorer

    def _pair(self, clip: Clip, route: str, frames: Callable[[], np.ndarray]) -> ClipPair:
        """What the metric sees for the clip's ground truth (or a still head, `frames`) on `route`."""
        base = route[:-len(MP4)] if route.endswith(MP4) else route
        if base == "given":
            if clip.pose is None:
                from core.errors import MetricError

                raise MetricError("the dataset has no head pose for the 'given' route")
            return ClipPair(clip.id, {"pose": clip.pose}, {"pose": clip.pose}, fps=clip.fps,
                            audio=clip.audio, sample_rate=clip.sample_rate)
        if base == "pnp/predicted":
            fields = {"landmarks": clip.landmarks}
            if clip.has_frames:
                fields["frames"] = clip.frames
            return ClipPair(clip.id, fields, dict(fields), frame_mask=clip.landmarks_found, fps=clip.fps,
                            audio=clip.audio, sample_rate=clip.sample_rate,
                            meta={"landmark_source": "predicted"})
        shown = frames()
        if route.endswith(MP4):
            shown = through_mp4(shown, clip.fps)
        lmk, found = self.scorer.detect(shown)
        fields = {"landmarks": np.where(found[:, None, None], np.nan_to_num(lmk), 0.0), "frames": shown}
        return ClipPair(clip.id, fields, dict(fields), frame_mask=found, fps=clip.fps, audio=clip.audio,
                        sample_rate=clip.sample_rate, meta={"landmark_source": "detected"})

    def values(self, metric, route: str, still: Optional[str] = None) -> dict[str, dict]:
        """clip id -> {"value": v} or {"error": reason} of the ground truth (`still` None) or of a still
        head (`STILL_HEADS`) through `route`, for every clip of the scorer."""
        out = {}
        for clip_id, clip in self.scorer.clips.items():
            tag = "ground_truth" if still is None else f"still_{still}"
            if still is not None:
                if not is_frame_route(route):
                    continue  # a still head's pose or landmarks are constant: 0 by construction
                if not can_hold_still(clip, still):
                    continue
                make = lambda c=clip, k=still: still_frames(c, k)  # noqa: E731  (only when not cached)
            else:
                make = lambda c=clip: c.frames  # noqa: E731
            key = key_of("motion_route_reference", metric.identity(), clip_hash(clip), route, tag,
                         self.scorer.extractor.cache_identity() if is_frame_route(route) else None,
                         MP4_RECIPE if route.endswith(MP4) else None)
            out[clip_id] = self.scorer.clip_value(
                metric, key, lambda c=clip, m=make: self._pair(c, route, m))
            clip.release_frames()
        return out


def summary(values: dict[str, float], boot: dict) -> dict:
    """{value, ci, n, per_clip} of per-clip values (mean, percentile bootstrap over clips)."""
    ordered = [v for _, v in sorted(values.items())]
    if not ordered:
        return {"value": None, "ci": [None, None], "n": 0, "per_clip": {}}
    ci = bootstrap_ci(ordered, boot["samples"], boot["seed"], boot["confidence"])
    return {"value": float(np.mean(ordered)), "ci": list(ci), "n": len(ordered),
            "per_clip": dict(sorted(values.items()))}


def distance(row: dict[str, float], reference: dict[str, float], boot: dict) -> dict:
    """|mean(row) − mean(reference)| over the clips both have, with a bootstrap CI over those clips
    (each resample recomputes both means)."""
    common = sorted(set(row) & set(reference))
    if not common:
        return {"value": None, "ci": [None, None], "n": 0}
    a = np.array([row[c] for c in common])
    b = np.array([reference[c] for c in common])
    idx = bootstrap_indices(len(common), boot["samples"], boot["seed"])
    stats = np.abs(a[idx].mean(axis=1) - b[idx].mean(axis=1))
    lo, hi = percentile_interval(stats, boot["confidence"])
    return {"value": float(abs(a.mean() - b.mean())), "ci": [lo, hi], "n": len(common)}


def motion_entry(refs: RouteReferences, metric, routes: dict[str, str], per_clip: dict[str, float],
                 boot: dict, floors: bool = True) -> dict:
    """What a row's motion metric entry adds: its route (the routes when clips differ), the ground
    truth through that route, the jitter floors (frame routes) and, under the distance convention,
    the distance to the reference. `routes`: clip id -> route of the row's scored clips."""
    found = sorted(set(routes.values()))
    if not found:
        return {"route": None}
    route = max(found, key=lambda r: sum(v == r for v in routes.values()))  # the row's main route
    out: dict = {"route": route if len(found) == 1 else found, "route_clips": len(routes)}
    gt = refs.values(metric, route)
    out["route_reference"] = {**summary({c: v["value"] for c, v in gt.items() if "value" in v}, boot),
                              "route": route,
                              "failures": {c: v["error"] for c, v in gt.items() if "error" in v}}
    if floors and is_frame_route(route):
        out["jitter_floor"] = {}
        for still in STILL_HEADS:
            got = refs.values(metric, route, still)
            if got:
                out["jitter_floor"][still] = summary({c: v["value"] for c, v in got.items() if "value" in v},
                                                     boot)
    if metric.params.get("convention") == "distance":
        ref = out["route_reference"]["per_clip"]
        out["distance"] = distance({c: v for c, v in per_clip.items() if routes.get(c) == route}, ref, boot)
    return out


# ----------------------------------------------------------------------------- the results file
MOTION_FLOOR = "_motion_floor"  # file stem, written by `talkbench run` beside the detector floor
PROBE_SMOOTHING = 2.0  # frames: the pose smoothing whose effect on the floors is also measured


def frame_routes(metric) -> list[str]:
    """The frame routes of a motion metric's backend: lossless frames and frames through an mp4."""
    base = {"pnp": "pnp/detected", "hopenet": "hopenet"}.get(metric.params["pose_backend"])
    return [] if base is None else [base, base + MP4]


def motion_floor(protocol, scorer, env: dict, smoothing: Optional[list[float]] = None) -> dict:
    """For every head-motion metric of the protocol, on its frame routes (lossless and through an
    mp4) and with its own pose smoothing and `PROBE_SMOOTHING`: the ground truth through the route,
    the ground truth through the landmark route (PnP on the exact landmarks), and the jitter floors
    of the still heads (`STILL_HEADS`). `kind: motion_floor`; the report's "Head motion" section."""
    from metrics import build_metric

    boot = protocol.bootstrap
    refs = RouteReferences(scorer)
    out: dict[str, dict] = {}
    for spec, metric, _ in scorer.metrics:
        if not is_motion_metric(metric) or not frame_routes(metric):
            continue
        sigmas = smoothing or sorted({float(metric.params["pose_smoothing"]), PROBE_SMOOTHING})
        entry: dict = {"name": spec.name, "params": dict(metric.params), "sigmas": {}}
        for sigma in sigmas:
            variant = metric if sigma == metric.params["pose_smoothing"] else build_metric(
                spec.name, {**metric.params, "pose_smoothing": sigma})
            variant.device = metric.device
            per_sigma = {}
            for route in ["pnp/predicted"] * (metric.params["pose_backend"] == "pnp") + frame_routes(metric):
                got = {"ground_truth": refs.values(variant, route)}
                if is_frame_route(route):
                    got.update({f"still_{s}": refs.values(variant, route, s) for s in STILL_HEADS})
                per_sigma[route] = {k: {**summary({c: v["value"] for c, v in vals.items() if "value" in v}, boot),
                                        "failures": {c: v["error"] for c, v in vals.items() if "error" in v}}
                                    for k, vals in got.items() if vals}
            entry["sigmas"][f"{sigma:g}"] = per_sigma
        out[spec.label] = entry
    return {"kind": "motion_floor", "protocol": protocol.id, "protocol_hash": protocol.hash,
            "detector": scorer.extractor.identity(), "mp4": MP4_RECIPE, "clips": len(scorer.clips),
            "metrics": out, "provenance": env}
