"""Head-motion metrics: Diversity and Beat Align (FD2Talk / SadTalker; `reference/metrics.md` §3),
read from the head-pose backends of `faces.pose`.

The head pose comes from a backend of `faces.pose` (``pose_backend`` parameter; its docstring
defines the angle convention and each backend).

Diversity
---------
Per clip, the standard deviation over time (population std, ddof 0) of yaw, of pitch and of roll in
degrees, averaged over the three axes; the set value is the mean over clips (the recommended
reproducible reading of FD2Talk's / SadTalker's "std of Hopenet head-motion embeddings",
`reference/metrics.md` §3.2). The papers mark it "higher is better", and so does the class, but the
ground-truth value is the target: a jittery or shaking head scores higher than natural motion.
Compare with the ground_truth row, which talkbench prints beside it. Needs at least 2 usable frames.

Beat Align
----------
Bailando's Beat Align Score, as FD2Talk applies it to head motion (`reference/metrics.md` §3.1):

* head-motion speed: s_t = ||θ_{t+1} − θ_t||₂ over θ = (yaw, pitch, roll) in degrees, t = 0..T−2
  (rotation only: translations are in other units and, from ``pnp``, poorly determined). Frames
  without a pose are filled by linear interpolation between their neighbours (held at the clip's
  ends) and counted in `notes`;
* smoothed with ``scipy.ndimage.gaussian_filter(s, smooth_sigma)`` (σ = 5 frames, Bailando's value;
  reflected borders); motion beats are its strict local minima (``argrelextrema(s, np.less)``: the
  first and last sample are never beats, a flat run of equal values is not a minimum). The index t
  of s_t is used as the beat's frame, as in Bailando;
* audio beats: librosa's percussive component (``librosa.effects.percussive``, switch off with
  ``hpss: false``), ``onset_strength(aggregate=np.median)`` and ``beat.beat_track`` on that envelope,
  both with hop = round(sample_rate / fps) samples (640 at 16 kHz and 25 fps, so onset frames are
  video frames; other rates are mapped by time: frame = round(beat_time · fps)). Beats at or after the
  clip's last frame are dropped;
* BA = mean over audio beats b of exp(−d_b² / (2σ²)), d_b = distance in frames from b to the nearest
  motion beat, σ = ``sigma`` frames (default 3, Bailando's; note 3 frames are 120 ms at 25 fps and
  50 ms at Bailando's 60 fps).

A clip whose head never slows down (no motion beat, e.g. a static head) scores 0 and gets a note in
`BeatAlign.notes`; a clip without audio or without any audio beat is a `MetricError`.

Pose routes, references and conventions (issue 16)
--------------------------------------------------
The value depends on how the head pose was obtained, not only on the motion: PnP on a detector's
per-frame landmarks reads detector jitter as head motion (on synthtalk, the ground-truth frames
through dlib + PnP score a Diversity about 1.6 times that of PnP on the exact landmarks). Every
value therefore carries its **route** (`pose_route`, `ROUTES`): the prediction's own pose
(``given``), PnP on the prediction's own landmarks (``pnp/predicted``; exact landmarks for the
ground truth), PnP on landmarks detected on its frames (``pnp/detected``) or Hopenet on its frames
(``hopenet``), the last two with ``+mp4`` when the frames were decoded from an H.264 mp4 (the
encoding moves detections too). The harness scores the ground truth through the same route as the
column's reference and a still head through it as the jitter floor (`bench.scoring`).

Parameters shared by both metrics:

* ``pose_smoothing``: sigma in frames of a Gaussian filter over time applied to the estimated
  angles before the metric (frames without a pose are interpolated first and stay excluded from
  Diversity). 0 (the default) is off, which reproduces the published numbers.
* ``convention``: ``raw`` (default; the papers' "higher is better", although a jittery head
  scores higher than natural motion) or ``distance``: |value − value of the ground truth through
  the same route| over the same clips, lower is better (the convention of recent papers). The
  per-clip values stay raw; the distance is taken between set means by the harness.
"""

from __future__ import annotations

import logging
import math
from typing import Any, ClassVar, Optional

import numpy as np
from scipy.ndimage import gaussian_filter, gaussian_filter1d

from faces.pose import (MIN_PNP_POINTS, PNP_POINT_SETS, POSE_BACKENDS, HopenetPose, build_pose_backend,
                        positive_number)
from metrics import register
from core.cache import Cache
from core.hashing import array_digest, code_fingerprint, key_of
from core.types import ClipPair
from metrics.base import Metric
from core.errors import MetricError

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------
# Pose routes
# --------------------------------------------------------------------------------------------

ROUTES: dict[str, str] = {
    "given": "the prediction's own head pose",
    "pnp/predicted": "PnP on the prediction's own landmarks (exact for the ground truth)",
    "pnp/detected": "PnP on the landmarks the protocol's detector finds on the frames",
    "hopenet": "Hopenet on the frames",
}
FRAME_ROUTES = ("pnp/detected", "hopenet")  # routes that read frames through an estimator
MP4 = "+mp4"  # suffix of a frame route whose frames were decoded from an H.264 mp4
CONVENTIONS = ("raw", "distance")


def pose_route(backend: str, landmark_source: Optional[str], frames_from: Optional[str] = None) -> str:
    """The route of a head-motion value: pose backend x where its input came from (module docstring).

    `landmark_source`: "predicted" or "detected" (`bench.scoring`); `frames_from`: "mp4" when the
    prediction's frames were decoded from an mp4 (only frame routes record it)."""
    if backend == "pnp":
        if landmark_source not in ("predicted", "detected"):
            raise ValueError(f"landmark source must be predicted or detected, got {landmark_source!r}")
        route = f"pnp/{landmark_source}"
    else:
        route = backend
    if route in FRAME_ROUTES and frames_from == "mp4":
        route += MP4
    return route


def route_label(route: str) -> str:
    """A sentence for a route key (`pose_route`)."""
    base, mp4 = (route[:-len(MP4)], True) if route.endswith(MP4) else (route, False)
    text = ROUTES.get(base, base)
    return text + (" decoded from an H.264 mp4" if mp4 else "")


def is_frame_route(route: str) -> bool:
    return route.split("+")[0] in FRAME_ROUTES


# --------------------------------------------------------------------------------------------
# Pure functions
# --------------------------------------------------------------------------------------------

def pose_diversity(angles: np.ndarray, mask: Optional[np.ndarray] = None) -> float:
    """Mean over yaw, pitch, roll of the std over the usable frames (T x 3 degrees in)."""
    angles = np.asarray(angles, dtype=np.float64)
    if angles.ndim != 2 or angles.shape[1] != 3:
        raise ValueError(f"angles have shape {angles.shape}, expected T x 3")
    mask = np.ones(len(angles), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    used = angles[mask]
    if len(used) < 2:
        raise MetricError(f"Diversity needs head pose on at least 2 frames, got {len(used)} of "
                          f"{len(angles)}")
    return float(used.std(axis=0).mean())


def fill_gaps(angles: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Angles with unusable frames filled by linear interpolation (held constant at the ends)."""
    angles = np.asarray(angles, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    if mask.all():
        return angles
    if not mask.any():
        raise MetricError("no frame has a head pose")
    t = np.arange(len(angles))
    return np.stack([np.interp(t, t[mask], angles[mask, k]) for k in range(angles.shape[1])], 1)


def smooth_angles(angles: np.ndarray, mask: np.ndarray, sigma: float) -> np.ndarray:
    """Angles smoothed over time by a Gaussian of `sigma` frames (0: unchanged); frames outside
    `mask` are interpolated first so that they do not pull their neighbours (ends held)."""
    angles = np.asarray(angles, dtype=np.float64)
    if sigma <= 0 or not np.asarray(mask).any():
        return angles
    return gaussian_filter1d(fill_gaps(angles, mask), sigma, axis=0, mode="nearest")


def head_speed(angles: np.ndarray) -> np.ndarray:
    """||θ_{t+1} − θ_t||₂ per step (T−1,), degrees per frame."""
    return np.linalg.norm(np.diff(np.asarray(angles, dtype=np.float64), axis=0), axis=1)


def local_minima(x: np.ndarray) -> np.ndarray:
    """Indices i (0 < i < n−1) with x[i] < x[i−1] and x[i] < x[i+1] (argrelextrema(x, np.less))."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) < 3:
        return np.zeros(0, dtype=int)
    return np.flatnonzero((x[1:-1] < x[:-2]) & (x[1:-1] < x[2:])) + 1


def motion_beats(angles: np.ndarray, smooth_sigma: float = 5.0) -> np.ndarray:
    """Frames of the local minima of the Gaussian-smoothed head speed (Bailando's `calc_db`)."""
    speed = head_speed(angles)
    if smooth_sigma > 0 and len(speed):
        speed = gaussian_filter(speed, smooth_sigma)
    return local_minima(speed)


def audio_beats(audio: np.ndarray, sample_rate: int, fps: float, num_frames: int,
                hpss: bool = True) -> np.ndarray:
    """Video-frame indices (< num_frames) of librosa's beats on the (percussive) onset envelope."""
    import librosa

    y = np.asarray(audio, dtype=np.float32)
    hop = int(round(sample_rate / fps))
    if hpss:
        y = librosa.effects.percussive(y)
    env = librosa.onset.onset_strength(y=y, sr=sample_rate, hop_length=hop, aggregate=np.median)
    _, beats = librosa.beat.beat_track(onset_envelope=env, sr=sample_rate, hop_length=hop)
    beats = np.asarray(beats, dtype=np.int64)
    if hop * fps != sample_rate:  # onset frames are not video frames: map by time
        beats = np.round(beats * hop / sample_rate * fps).astype(np.int64)
    return np.unique(beats[(beats >= 0) & (beats < num_frames)])


_AUDIO_BEATS: dict[tuple, np.ndarray] = {}  # audio digest and settings -> beats (one clip, many routes)
_AUDIO_BEATS_KEPT = 256


def cached_audio_beats(audio: np.ndarray, sample_rate: int, fps: float, num_frames: int,
                       hpss: bool = True, cache: Optional[Cache] = None) -> np.ndarray:
    """`audio_beats`, remembered for the last few hundred clips: the audio beats of a clip do not
    depend on the pose route, and the harness scores one clip through several routes. With
    `cache` (the scorer's, `Metric.cache`) they are also kept on disk under the audio's content,
    so a clip's beats are found once for every row and every worker process (librosa's beat
    tracker is the slow part of Beat Align, and its first call in a process compiles numba code)."""
    y = np.ascontiguousarray(audio, dtype=np.float32)
    key = (array_digest(y), int(sample_rate), float(fps), int(num_frames), bool(hpss))
    if key not in _AUDIO_BEATS:
        if len(_AUDIO_BEATS) >= _AUDIO_BEATS_KEPT:
            _AUDIO_BEATS.pop(next(iter(_AUDIO_BEATS)))
        disk = None if cache is None else key_of("audio_beats", code_fingerprint(__name__),
                                                 librosa_version(), *key)
        got = None if disk is None else cache.get_arrays("audio_beats", disk)
        if got is None:
            got = {"beats": audio_beats(y, sample_rate, fps, num_frames, hpss)}
            if disk is not None:
                cache.put_arrays("audio_beats", disk, got)
        _AUDIO_BEATS[key] = got["beats"]
    return _AUDIO_BEATS[key].copy()


def librosa_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("librosa")
    except metadata.PackageNotFoundError:
        return "absent"


def beat_align_score(motion: np.ndarray, audio: np.ndarray, sigma: float = 3.0) -> float:
    """Mean over audio beats of exp(−d²/(2σ²)), d = frames to the nearest motion beat.

    No audio beat is an error; no motion beat scores 0.
    """
    motion = np.asarray(motion, dtype=np.float64).ravel()
    audio = np.asarray(audio, dtype=np.float64).ravel()
    if audio.size == 0:
        raise MetricError("no audio beat")
    if motion.size == 0:
        return 0.0
    d = np.abs(audio[:, None] - motion[None, :]).min(axis=1)
    return float(np.exp(-d ** 2 / (2.0 * sigma ** 2)).mean())


# --------------------------------------------------------------------------------------------
# Metric classes
# --------------------------------------------------------------------------------------------

class _HeadMotionMetric(Metric):
    higher_is_better = True
    needs = ("landmarks",)  # pose_backend pnp (the default); "given" needs ("pose",)
    level = "clip"
    defaults: ClassVar[dict[str, Any]] = {"pose_backend": "pnp", "pnp_points": "rigid",
                                          "pnp_focal": 1.0, "image_size": None,
                                          "pose_smoothing": 0.0, "convention": "raw"}

    @classmethod
    def higher_is_better_of(cls, params: dict[str, Any]) -> bool:
        """Raw values: the papers' "higher is better"; distance to the reference: lower."""
        return params.get("convention", "raw") != "distance"

    def route(self, landmark_source: Optional[str], frames_from: Optional[str] = None) -> str:
        """This metric's pose route for a prediction scored from `landmark_source` landmarks."""
        return pose_route(self.params["pose_backend"], landmark_source, frames_from)

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.backend = build_pose_backend(self.params["pose_backend"], self.params["pnp_points"],
                                          self.params["image_size"], self.params["pnp_focal"])
        self.needs = self.backend.needs
        self.weights_path = None
        if isinstance(self.backend, HopenetPose):  # unavailable now, not on the first clip
            from core import weights

            self.weights_path = weights.resolve("hopenet")
            self.backend.estimator.weights = self.weights_path

    def identity(self) -> dict:
        ident = super().identity()
        if self.weights_path is not None:  # values change with the network's weights
            from core import weights

            ident["weights"] = {"hopenet": weights.fingerprint(self.weights_path)}
        return ident

    def validate_params(self) -> None:
        p = self.params
        self.check_choice("pose_backend", POSE_BACKENDS)
        self.check_choice("pnp_points", PNP_POINT_SETS)
        self.check_choice("convention", CONVENTIONS)
        s = p["pose_smoothing"]
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or s < 0:
            raise ValueError(f"metric {self.name}: parameter 'pose_smoothing' must be a number of "
                             f"frames >= 0 (0: off), got {s!r}")
        if not positive_number(p["pnp_focal"]):
            raise ValueError(f"metric {self.name}: parameter 'pnp_focal' must be a positive "
                             f"multiple of the frame width, got {p['pnp_focal']!r}")
        size = p["image_size"]
        if size is not None and not (isinstance(size, (list, tuple)) and len(size) == 2
                                     and all(positive_number(v) for v in size)):
            raise ValueError(f"metric {self.name}: parameter 'image_size' must be null or "
                             f"[width, height] in pixels, got {size!r}")

    def points_problem(self, points: tuple[int, ...]) -> Optional[str]:
        if self.params["pose_backend"] != "pnp":
            return None
        rigid = PNP_POINT_SETS[self.params["pnp_points"]]
        covered = [p for p in rigid if p in points]
        if len(covered) < MIN_PNP_POINTS:
            return (f"head pose by PnP needs at least {MIN_PNP_POINTS} of the points {list(rigid)}; "
                    f"the method predicts {len(covered)} of them")
        return None

    def head_angles(self, pair: ClipPair) -> tuple[np.ndarray, np.ndarray]:
        """Per-frame (yaw, pitch, roll) and which frames have them. `frame_mask` (landmark
        detection) applies to pnp only: a given pose does not depend on a detector."""
        if isinstance(self.backend, HopenetPose):
            self.backend.device = self.device
        angles, ok = self.backend.angles(pair)
        if len(angles) == 0:
            raise MetricError("the clip has no frames")
        return smooth_angles(angles, ok, float(self.params["pose_smoothing"])), ok


@register
class Diversity(_HeadMotionMetric):
    """Std over time of yaw, pitch, roll (degrees), averaged over the three; ground truth is the target."""

    name = "Diversity"
    unit = "°"

    def clip_value(self, pair: ClipPair) -> float:
        angles, ok = self.head_angles(pair)
        return pose_diversity(angles, ok)


@register
class BeatAlign(_HeadMotionMetric):
    """Bailando's Beat Align Score of head-motion beats against audio beats (module docstring)."""

    name = "BeatAlign"
    defaults = {**_HeadMotionMetric.defaults, "sigma": 3.0, "smooth_sigma": 5.0, "hpss": True}

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.notes: dict[str, str] = {}  # clip id -> what was unusual about its score

    def validate_params(self) -> None:
        super().validate_params()
        p = self.params
        if not positive_number(p["sigma"]):
            raise ValueError(f"metric {self.name}: parameter 'sigma' must be a positive number "
                             f"of frames, got {p['sigma']!r}")
        s = p["smooth_sigma"]
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or s < 0:
            raise ValueError(f"metric {self.name}: parameter 'smooth_sigma' must be a number of "
                             f"frames >= 0, got {s!r}")
        if not isinstance(p["hpss"], bool):
            raise ValueError(f"metric {self.name}: parameter 'hpss' must be true or false, "
                             f"got {p['hpss']!r}")

    def clip_value(self, pair: ClipPair) -> float:
        self.notes.pop(pair.clip_id, None)  # one instance scores every method: no stale note
        if pair.audio is None or np.size(pair.audio) == 0:
            raise MetricError("Beat Align needs the clip's audio; this clip has none")
        audio = np.asarray(pair.audio)
        if audio.ndim != 1 or not np.isfinite(audio).all():
            raise MetricError(f"audio must be a finite mono signal, got shape {audio.shape}")
        if not positive_number(pair.fps) or not positive_number(pair.sample_rate):
            raise MetricError(f"fps ({pair.fps}) and sample_rate ({pair.sample_rate}) must be "
                              f"positive")
        angles, ok = self.head_angles(pair)
        notes = []
        if not ok.any():
            raise MetricError("no frame has a head pose")
        if not ok.all():
            notes.append(f"{int((~ok).sum())} of {len(ok)} frame(s) without a head pose were "
                         f"interpolated")
        angles = fill_gaps(angles, ok)
        heard = cached_audio_beats(audio, int(pair.sample_rate), float(pair.fps), len(angles),
                                   hpss=self.params["hpss"], cache=self.cache)
        if heard.size == 0:
            raise MetricError(f"no audio beat found in the clip's {len(audio) / pair.sample_rate:.2f} s "
                              f"of audio (silent or too short for librosa's beat tracker)")
        moved = motion_beats(angles, float(self.params["smooth_sigma"]))
        if moved.size == 0:
            notes.append("no motion beat (the smoothed head speed has no local minimum): score 0")
        if notes:
            self.notes[pair.clip_id] = "; ".join(notes)
            log.info("BeatAlign %s: %s", pair.clip_id, self.notes[pair.clip_id])
        return beat_align_score(moved, heard, float(self.params["sigma"]))
