"""Metric sanity checks: perturb the ground truth in known ways and check each metric moves right.

`talkbench sanity PROTOCOL` takes a subset of the protocol's test clips, makes "predictions" that
are the ground truth itself (original) and the ground truth perturbed in one known way (perturbed),
scores both through the pipeline of `talkbench run` and `score` (`bench.pipeline`: the same
evaluators, `Scorer` and metric code, with the protocol's own metric parameters), and compares. A metric that does not move the expected way on its own data cannot be trusted there.

Checks (each touches only what it names; the metrics listed are those of the protocol):

* ``audio_shift``: the audio is delayed by k frames (k x 640 samples of silence in front, the end
  cut). LSE-C must fall and the SyncNet |AV offset| must grow by k (+-1, the reference's tolerance).
  Every LSE-C entry of the protocol gets an AV-offset twin with the same parameters if it has none.
  Needs SyncNet weights: the official file or, where the protocol names it, the protocol's expert.
* ``blur``: Gaussian blur (sigma `blur_sigma` px, cv2.GaussianBlur) of every frame. PSNR, SSIM and
  CPBD must fall, LPIPS and FVD must rise.
* ``frozen_pose``: the head pose is frozen at the first frame's: the dataset's 3D landmarks are
  re-projected with that pose (expressions and speech unchanged). Diversity must fall to ~0 (below
  10% of the original) and Beat Align must change. Needs 3D landmarks and pose in the synthtalk
  camera (checked: the re-projection with the true pose must reproduce the 2D landmarks).
* ``landmark_jitter``: i.i.d. Gaussian noise of sigma `jitter_sigma` px (seeded) on every landmark
  coordinate. LD and LVD must rise, by about the expected amount when the metric is in pixels:
  E|n| = sigma sqrt(pi/2) for a point (LD), sigma sqrt(pi) for a velocity (LVD, the difference of
  two independent noises), and sigma sqrt(pi/2) sqrt(1 - 1/20) for the mouth-centred LMD (centring
  on the 20 mouth points removes their mean noise). Pass: within 25% of the expected increase.
* ``pose_jitter``: per-frame landmark jitter without moving the head (i.i.d. Gaussian noise of sigma
  `jitter_sigma` px on every point, the 3D pose unchanged), the way a detector adds it. The jittered
  prediction is compared with the ground truth through the same jittered route (the ground truth's
  landmarks with another draw of the same noise): the route-consistent comparison (mean per-clip
  difference of the raw Diversity / Beat Align values, 95% bootstrap CI over the clips) must contain
  0. The detail also gives how far the jitter moved the raw value away from the exact-landmark one,
  which is what comparing across routes would have read as a difference.
* ``mouth_still``: speech motion removed: the mouth (48-67) and jaw (0-16) points are held at the
  3D shape of the clip's most closed-mouth frame, then projected with the true pose. AU-F1 and
  AU-Acc (labels from the ground truth) must fall.

* ``codec``: not a fault but a fact to know (THEval measured LSE moving by 0.4-1.2 with the codec
  alone): the ground-truth frames and audio encoded in the protocol's pinned encoding (talkbench's
  default, H.264 CRF 18 + AAC, when it pins none) against the same clips in MPEG-4 Part 2 (1 Mbit/s)
  + MPEG audio layer II, both decoded and scored as frame-only predictions (landmark metrics
  through the detector) with the decoded audio. Every frame metric's change is reported (verdict
  ``measured``): how much a codec alone moves each number.

Verdicts: ``pass``, ``FAIL``, ``measured`` (codec), or ``unavailable`` with the reason (weights missing, the data lacks
what the perturbation needs, the metric failed on every clip). The table goes to
``results/<protocol>/sanity.json`` and is printed by the CLI and by the report.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional

import cv2
import numpy as np

from core.types import Clip, Prediction
from bench.data.video import DEFAULT_ENCODING, Encoding, read_video, write_encoded
from bench.pipeline import ALLOW_UNPINNED_HELP, Session, evaluator_identities
from bench.protocol import MetricSpec, Protocol
from bench.results import SANITY_FILE, results_dir, write_result
from bench.tables import markdown_table

CHECKS = ("audio_shift", "blur", "frozen_pose", "landmark_jitter", "pose_jitter", "mouth_still", "codec")
CODEC_OTHER = Encoding(video_codec="mpeg4", crf=None, bitrate=1_000_000, audio_codec="mp2", sample_rate=16000)
SAMPLES_PER_FRAME = 640  # 16 kHz / 25 fps
MOUTH_AND_JAW = list(range(0, 17)) + list(range(48, 68))
TO_ZERO_FRACTION = 0.1
AMOUNT_TOLERANCE = 0.25
OFFSET_TOLERANCE = 1.0

# metric name -> expected direction, per check
EXPECTED: dict[str, dict[str, str]] = {
    "audio_shift": {"LSE-C": "down", "AV-offset": "+k"},
    "blur": {"PSNR": "down", "SSIM": "down", "CPBD": "down", "LPIPS": "up", "FVD": "up"},
    "frozen_pose": {"Diversity": "-> 0", "BeatAlign": "changes"},
    "landmark_jitter": {"M-LD": "up", "F-LD": "up", "LMD": "up", "M-LVD": "up", "F-LVD": "up"},
    "pose_jitter": {"Diversity": "= reference", "BeatAlign": "= reference"},
    "mouth_still": {"AU-F1": "down", "AU-Acc": "down"},
    "codec": {},  # every metric that scores frames or audio: "measured"
}
LD_FACTOR = math.sqrt(math.pi / 2)  # E|n| of a 2-D isotropic Gaussian per unit sigma
LVD_FACTOR = math.sqrt(math.pi)
LMD_FACTOR = LD_FACTOR * math.sqrt(1 - 1 / 20)


@dataclass
class Settings:
    clips: int = 4
    shift_frames: int = 3
    blur_sigma: float = 2.0
    jitter_sigma: float = 1.0
    seed: int = 0


@dataclass
class Row:
    check: str
    metric: str  # the protocol's label
    original: Optional[float]
    perturbed: Optional[float]
    expected: str
    verdict: str  # pass | FAIL | unavailable
    reason: str = ""
    expected_value: Optional[float] = None
    weights: Optional[dict] = None  # weight file name -> sha256, for metrics that load a network


@dataclass
class Perturbation:
    """Original and perturbed (clip, prediction) lists, or why the check cannot run here."""

    original: list[tuple[Clip, Prediction]] = field(default_factory=list)
    perturbed: list[tuple[Clip, Prediction]] = field(default_factory=list)
    unavailable: Optional[str] = None


# ----------------------------------------------------------------------------------- verdicts
def verdict(expected: str, original: Optional[float], perturbed: Optional[float],
            amount: Optional[float] = None) -> tuple[str, str]:
    """(verdict, reason) for one metric: did it move as `expected`?

    `expected`: "up", "down", "-> 0", "changes", or "+k" with `amount` = k (the value must grow by
    k within +-1). For "up" with an `amount`, the increase must also be within 25% of it.
    """
    if original is None or perturbed is None or not (math.isfinite(original) and math.isfinite(perturbed)):
        return "unavailable", "no value for the original or the perturbed clips"
    delta = perturbed - original
    tiny = 1e-9 * max(1.0, abs(original))
    if expected == "up":
        if delta <= tiny:
            return "FAIL", f"did not rise ({delta:+.4g})"
        if amount is not None and abs(delta - amount) > AMOUNT_TOLERANCE * amount:
            return "FAIL", f"rose by {delta:.4g}, expected about {amount:.4g} (+-{AMOUNT_TOLERANCE:.0%})"
        return "pass", f"rose by {delta:.4g}" + (f" (expected {amount:.4g})" if amount is not None else "")
    if expected == "down":
        return ("pass", f"fell by {-delta:.4g}") if delta < -tiny else ("FAIL", f"did not fall ({delta:+.4g})")
    if expected == "-> 0":
        if original <= tiny:
            return "unavailable", "the original value is already 0: nothing to lower"
        ok = abs(perturbed) <= TO_ZERO_FRACTION * abs(original)
        return ("pass" if ok else "FAIL",
                f"{abs(perturbed) / abs(original):.1%} of the original (must be <= {TO_ZERO_FRACTION:.0%})")
    if expected == "changes":
        return ("pass", f"changed by {delta:+.4g}") if abs(delta) > tiny else ("FAIL", "did not change")
    if expected == "+k":
        if amount is None:
            raise ValueError("expected '+k' needs the amount k")
        ok = abs(delta - amount) <= OFFSET_TOLERANCE
        return ("pass" if ok else "FAIL", f"moved by {delta:+.3g} frames, expected {amount:+g} (+-1)")
    raise ValueError(f"unknown expectation {expected!r}")


# ----------------------------------------------------------------------------------- perturbations
def _truth(clip: Clip, frames: bool = True) -> Prediction:
    return Prediction(clip.id, landmarks=np.asarray(clip.landmarks, dtype=np.float32).copy(),
                      frames=clip.frames if frames and clip.has_frames else None,
                      pose=None if clip.pose is None else clip.pose.copy())


def delay_audio(audio: np.ndarray, frames: int) -> np.ndarray:
    """The audio delayed by `frames` video frames at 25 fps / 16 kHz (silence in front, end cut)."""
    n = frames * SAMPLES_PER_FRAME
    if n <= 0 or n >= len(audio):
        raise ValueError(f"cannot delay {len(audio)} samples by {n}")
    return np.concatenate([np.zeros(n, dtype=audio.dtype), audio[:-n]])


def blur_frames(frames: np.ndarray, sigma: float) -> np.ndarray:
    return np.stack([cv2.GaussianBlur(np.ascontiguousarray(f), (0, 0), sigmaX=sigma) for f in frames])


def _synthtalk_camera(clip: Clip) -> Optional[str]:
    """Why the clip's 3D landmarks and pose cannot be re-projected (None if they can)."""
    if clip.landmarks3d is None or clip.pose is None:
        return "the dataset has no 3D landmarks and head pose to re-project"
    from bench.data.synthtalk.face import project

    err = np.abs(project(clip.landmarks3d.astype(np.float64), clip.pose.astype(np.float64))
                 - clip.landmarks).max()
    if not err < 0.05:
        return (f"the dataset's 3D landmarks and pose do not reproduce its 2D landmarks with "
                f"synthtalk's camera (max error {err:.3g} px)")
    return None


def through_codec(clip: Clip, encoding: Encoding) -> tuple[Clip, Prediction]:
    """The clip's ground-truth frames and audio encoded in `encoding` and decoded: (the clip with
    the decoded audio, a frame-only prediction of the decoded frames)."""
    with tempfile.TemporaryDirectory(prefix="talkbench-codec-") as tmp:
        path = write_encoded(Path(tmp) / f"{clip.id}.mp4", clip.frames, clip.fps, clip.audio,
                             clip.sample_rate or 16000, encoding)
        video = read_video(path, sample_rate=clip.sample_rate or 16000)
    frames = video.frames[: clip.num_frames]
    audio = np.zeros_like(clip.audio) if video.audio is None else video.audio[: len(clip.audio)]
    if len(audio) < len(clip.audio):
        audio = np.pad(audio, (0, len(clip.audio) - len(audio)))
    return replace(clip, audio=audio.astype(clip.audio.dtype)), Prediction(clip.id, frames=frames)


def perturb(check: str, clips: list[Clip], settings: Settings,
            encoding: Optional[Encoding] = None) -> Perturbation:
    from bench.data.synthtalk.face import lip_gap, project

    out = Perturbation()
    rng = np.random.default_rng(settings.seed)
    for clip in clips:
        if check == "codec":
            if not clip.has_frames:
                return Perturbation(unavailable="the clips have no frames")
            out.original.append(through_codec(clip, encoding or DEFAULT_ENCODING))
            out.perturbed.append(through_codec(clip, CODEC_OTHER))
        elif check == "audio_shift":
            if not clip.has_frames:
                return Perturbation(unavailable="the clips have no frames")
            try:
                shifted = replace(clip, audio=delay_audio(clip.audio, settings.shift_frames))
            except ValueError as exc:
                return Perturbation(unavailable=f"clip {clip.id}: {exc}")
            pred = _truth(clip)
            out.original.append((clip, pred))
            out.perturbed.append((shifted, pred))
        elif check == "blur":
            if not clip.has_frames:
                return Perturbation(unavailable="the clips have no frames")
            pred = _truth(clip)
            out.original.append((clip, pred))
            out.perturbed.append((clip, replace(pred, frames=blur_frames(pred.frames, settings.blur_sigma))))
        elif check in ("frozen_pose", "mouth_still"):
            why = _synthtalk_camera(clip)
            if why:
                return Perturbation(unavailable=why)
            l3d, pose = clip.landmarks3d.astype(np.float64), clip.pose.astype(np.float64)
            if check == "frozen_pose":
                pose = np.repeat(pose[:1], len(pose), axis=0)
            else:
                still = l3d.copy()
                closed = int(np.argmin(lip_gap(l3d)))
                still[:, MOUTH_AND_JAW] = l3d[closed, MOUTH_AND_JAW]
                l3d = still
            truth = _truth(clip, frames=False)
            out.original.append((clip, truth))
            out.perturbed.append((clip, replace(truth, landmarks=project(l3d, pose).astype(np.float32),
                                                pose=pose.astype(np.float32))))
        elif check == "pose_jitter":  # original: the reference through the jittered route
            truth = _truth(clip, frames=False)
            ref_noise = rng.normal(0.0, settings.jitter_sigma, truth.landmarks.shape)
            noise = rng.normal(0.0, settings.jitter_sigma, truth.landmarks.shape)
            out.original.append((clip, replace(truth, landmarks=(truth.landmarks + ref_noise).astype(np.float32))))
            out.perturbed.append((clip, replace(truth, landmarks=(truth.landmarks + noise).astype(np.float32))))
        elif check == "landmark_jitter":
            truth = _truth(clip, frames=False)
            noise = rng.normal(0.0, settings.jitter_sigma, truth.landmarks.shape)
            out.original.append((clip, truth))
            out.perturbed.append((clip, replace(truth, landmarks=(truth.landmarks + noise).astype(np.float32))))
        else:
            raise ValueError(f"unknown check {check!r}; known: {list(CHECKS)}")
    return out


def expected_amount(check: str, spec: MetricSpec, settings: Settings) -> Optional[float]:
    if check == "audio_shift" and spec.name == "AV-offset":
        return float(settings.shift_frames)
    if check == "landmark_jitter" and spec.params.get("normalize", "none") == "none":
        if spec.name == "LMD":
            return settings.jitter_sigma * (LMD_FACTOR if spec.params.get("region", "mouth") == "mouth"
                                            else LD_FACTOR)
        return settings.jitter_sigma * (LVD_FACTOR if spec.name.endswith("LVD") else LD_FACTOR)
    return None


# ----------------------------------------------------------------------------------- scoring
def sanity_metrics(protocol: Protocol) -> list[MetricSpec]:
    """The protocol's metrics, plus an AV-offset twin for every LSE-C entry that has none."""
    specs = list(protocol.metrics)
    have = {(s.name, json.dumps(s.params, sort_keys=True, default=str)) for s in specs}
    for s in protocol.metrics:
        if s.name == "LSE-C" and ("AV-offset", json.dumps(s.params, sort_keys=True, default=str)) not in have:
            label = "AV-offset" + s.label[len("LSE-C"):] if s.label.startswith("LSE-C") else f"AV-offset ({s.label})"
            specs.append(MetricSpec("AV-offset", label, dict(s.params)))
    return specs


def _pred_key(clip: Clip, pred: Prediction) -> str:
    h = hashlib.sha256(b"sanity")
    h.update(clip.id.encode())
    for name in ("landmarks", "frames", "pose"):
        value = getattr(pred, name)
        h.update(name.encode())
        if value is not None:
            h.update(np.ascontiguousarray(value).tobytes())
    return "sanity:" + h.hexdigest()


def _score(session: Session, specs: list[MetricSpec], pairs: list[tuple[Clip, Prediction]],
           row: str) -> dict[str, dict]:
    """label -> result entry (as in `talkbench run`'s results) for predictions of these clips."""
    preds = {c.id: p for c, p in pairs}
    keys = {c.id: _pred_key(c, p) for c, p in pairs}
    result = session.evaluate(row, preds, keys=keys, clips=[c for c, _ in pairs], metrics=tuple(specs))
    return result["metrics"]


def _why_no_value(entry: dict) -> str:
    if entry.get("unavailable"):
        return "unavailable: " + entry["unavailable"]
    if entry.get("not_applicable"):
        return "not applicable: " + entry["not_applicable"]
    if entry.get("failures") and not entry.get("n"):
        first = next(iter(entry["failure_reasons"].values()), "")
        return f"failed on every clip ({first})"
    return "no value"


def run_checks(protocol: Protocol, clips: list[Clip], settings: Settings = Settings(),
               device: str = "cpu", checks: tuple[str, ...] = CHECKS,
               progress: Optional[Callable[[str], None]] = None,
               evaluators: Optional[dict[str, dict]] = None) -> list[Row]:
    """The checks on these clips. `evaluators`: what was made for the protocol's metrics
    (`bench.experts.resolve`; `sanity` passes its session's)."""
    session = Session(protocol, {"test": list(clips)}, device=device, evaluators=dict(evaluators or {}),
                      progress=False)
    specs = sanity_metrics(protocol)
    rows: list[Row] = []
    for check in checks:
        expected = EXPECTED[check]
        wanted = [s for s in specs if s.name in expected or check == "codec"]
        if not wanted:
            continue
        if progress:
            progress(check)
        pert = perturb(check, clips, settings, protocol.encode)
        if pert.unavailable:
            rows += [Row(check, s.label, None, None, _expect_text(check, s, settings), "unavailable",
                         pert.unavailable) for s in wanted]
            continue
        before = _score(session, wanted, pert.original, f"{check}: original")
        after = _score(session, wanted, pert.perturbed, f"{check}: perturbed")
        exact = (_score(session, wanted, [(c, _truth(c, frames=False)) for c in clips], f"{check}: exact")
                 if check == "pose_jitter" else {})
        for s in wanted:
            # raw values: a head-motion column under `convention: distance` holds the distance
            b, a = ({k: v for k, v in e.items()} | {"value": e.get("raw_value", e["value"])}
                    for e in (before[s.label], after[s.label]))
            amount = expected_amount(check, s, settings)
            if check == "pose_jitter" and b["value"] is not None and a["value"] is not None:
                v, reason = route_consistent(b, a, exact.get(s.label, {}), protocol.bootstrap)
                rows.append(Row(check, s.label, b["value"], a["value"], "= reference (within CI)", v, reason,
                                None, b.get("weights")))
                continue
            if b["value"] is None or a["value"] is None:
                why = _why_no_value(b if b["value"] is None else a)
                rows.append(Row(check, s.label, b["value"], a["value"], _expect_text(check, s, settings),
                                "unavailable", why, amount))
                continue
            if check == "codec":
                delta = a["value"] - b["value"]
                rel = f" ({delta / abs(b['value']):+.2%})" if b["value"] else ""
                rows.append(Row(check, s.label, b["value"], a["value"], "measured", "measured",
                                f"changed by {delta:+.4g}{rel}", None, b.get("weights")))
                continue
            v, reason = verdict(expected[s.name], b["value"], a["value"], amount)
            rows.append(Row(check, s.label, b["value"], a["value"], _expect_text(check, s, settings),
                            v, reason, amount, b.get("weights")))
    return rows


def route_consistent(reference: dict, jittered: dict, exact: dict, boot: dict) -> tuple[str, str]:
    """(verdict, reason) of `pose_jitter`: the mean per-clip difference jittered − reference (both
    through the jittered route) must have a 95% bootstrap CI containing 0."""
    from bench.stats import bootstrap_ci

    common = sorted(set(reference.get("per_clip", {})) & set(jittered.get("per_clip", {})))
    if len(common) < 2:
        return "unavailable", "fewer than 2 clips with a value on both sides"
    diff = [jittered["per_clip"][c] - reference["per_clip"][c] for c in common]
    lo, hi = bootstrap_ci(diff, boot["samples"], boot["seed"], boot["confidence"])
    naive = exact.get("raw_value", exact.get("value"))
    moved = (f"; against the exact landmarks (another route) it would read {jittered['value'] - naive:+.4g}"
             if naive is not None else "")
    inside = lo <= 0.0 <= hi
    return ("pass" if inside else "FAIL",
            f"route-consistent difference {float(np.mean(diff)):+.4g} [{lo:+.4g}, {hi:+.4g}] over {len(common)} "
            f"clips {'contains' if inside else 'excludes'} 0{moved}")


def _expect_text(check: str, spec: MetricSpec, settings: Settings) -> str:
    if check == "codec":
        return "measured"
    exp = EXPECTED[check][spec.name]
    if check == "pose_jitter":
        return "= reference (within CI)"
    if exp == "+k":
        return f"+{settings.shift_frames} frames"
    amount = expected_amount(check, spec, settings)
    return f"{exp} (~{amount:.3g})" if amount is not None and exp == "up" else exp


def pick_clips(clips: list[Clip], n: int) -> list[Clip]:
    """`n` clips spread evenly over the (sorted) test split, so several speakers take part."""
    if n <= 0 or n >= len(clips):
        return list(clips)
    idx = np.linspace(0, len(clips) - 1, n).round().astype(int)
    return [clips[i] for i in sorted(set(idx.tolist()))]


# ----------------------------------------------------------------------------------- output
def format_table(rows: list[Row]) -> list[str]:
    body = [[r.check, r.metric, _fmt(r.original), _fmt(r.perturbed), r.expected,
             {"pass": "pass", "FAIL": "**FAIL**"}.get(r.verdict, r.verdict), r.reason.replace("|", "/")]
            for r in rows]
    return markdown_table(["Check", "Metric", "Original", "Perturbed", "Expected", "Verdict", "Detail"], body)


def _fmt(v: Optional[float]) -> str:
    return "—" if v is None else f"{v:.3f}"


def sanity(protocol_name: str, device: str = "cpu", settings: Settings = Settings(),
           out_root: Optional[Path] = None, progress: bool = True,
           checks: tuple[str, ...] = CHECKS, data_root: Optional[Path] = None,
           allow_unpinned: bool = False) -> tuple[Path, dict]:
    """Run the checks on the protocol's test split; write results/<protocol>/sanity.json."""
    start = time.perf_counter()
    session = Session.open(protocol_name, device, progress, data_root,  # trains experts if missing
                           allow_unpinned=allow_unpinned)
    protocol = session.protocol
    expert_s = time.perf_counter() - start  # with loading the data
    clips = pick_clips(session.test, settings.clips)
    start = time.perf_counter()
    say = (lambda c: print(f"sanity: {c} ...", flush=True)) if progress else None
    rows = run_checks(protocol, clips, settings, device, checks, say, session.evaluators)
    result = {
        "kind": "sanity", "protocol": protocol.id, "protocol_hash": protocol.hash,
        "clips": [c.id for c in clips], "settings": vars(settings),
        "rows": [vars(r) for r in rows],
        "summary": {v: sum(r.verdict == v for r in rows) for v in ("pass", "FAIL", "measured", "unavailable")},
        "timings": {"experts_s": expert_s, "checks_s": time.perf_counter() - start},
        "provenance": {**session.environment(), "evaluators": evaluator_identities(session.evaluators)},
    }
    path = results_dir(protocol, out_root) / SANITY_FILE
    write_result(path, result)
    return path, result


def report_lines(data: Optional[dict]) -> list[str]:
    """The "Metric sanity checks" report section from a `sanity.json` ([] if there is none)."""
    if not data:
        return []
    rows = [Row(**r) for r in data.get("rows", [])]
    s = data.get("settings", {})
    summary = data.get("summary", {})
    return ["", "## Metric sanity checks", "",
            f"`talkbench sanity {data.get('protocol')}`: the ground truth of {len(data.get('clips', []))} "
            f"test clips scored as is and perturbed in a known way (audio delayed "
            f"{s.get('shift_frames')} frames, Gaussian blur sigma {s.get('blur_sigma')} px, head pose "
            f"frozen, landmark noise sigma {s.get('jitter_sigma')} px, the same noise as per-frame pose "
            f"jitter with the head still and compared with the ground truth through that jittered route, "
            f"mouth and jaw held still; codec: the clips through the pinned or default H.264 + AAC "
            f"against MPEG-4 Part 2 + MP2, every metric's change measured). "
            f"{summary.get('pass', 0)} pass, {summary.get('FAIL', 0)} FAIL, "
            f"{summary.get('measured', 0)} measured, {summary.get('unavailable', 0)} unavailable.", ""
            ] + format_table(rows)


# ----------------------------------------------------------------------------------- CLI
def _cmd_sanity(args: argparse.Namespace) -> int:
    checks = tuple(c for c in args.checks.split(",") if c) if args.checks else CHECKS
    unknown = [c for c in checks if c not in CHECKS]
    if unknown:
        raise ValueError(f"unknown check(s) {unknown}; known: {list(CHECKS)}")
    settings = Settings(clips=args.clips, shift_frames=args.shift, seed=args.seed)
    path, result = sanity(args.protocol, args.device, settings,
                          Path(args.results) if args.results else None, not args.quiet, checks,
                          Path(args.root) if args.root else None, args.allow_unpinned)
    print("\n".join(format_table([Row(**r) for r in result["rows"]])))
    print(f"sanity checks: {path}")
    return 0


def add_cli(subparsers: "argparse._SubParsersAction") -> argparse.ArgumentParser:
    p = subparsers.add_parser("sanity", help="perturb ground truth in known ways and check each "
                                             "metric moves the right way")
    p.add_argument("protocol")
    p.add_argument("--device", default="cpu")
    p.add_argument("--clips", type=int, default=Settings.clips, help="test clips used (0: all)")
    p.add_argument("--shift", type=int, default=Settings.shift_frames, help="audio delay in frames")
    p.add_argument("--checks", help=f"comma-separated subset of {','.join(CHECKS)}")
    p.add_argument("--root", help="dataset root of a real dataset (default: $TALKBENCH_DATA_<DATASET>)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--allow-unpinned", action="store_true", help=ALLOW_UNPINNED_HELP)
    p.add_argument("--results", help="results root (default: the repository's results/)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_sanity)
    return p
