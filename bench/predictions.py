"""Predictions on disk, and the checks every prediction passes before it is scored.

Folder format (also what `talkbench run` writes, and what `talkbench score` reads):

    DIR/<clip_id>.npz   optional arrays: landmarks (T x P x 2, pixels), points (P,) iBUG-68 indices
                        of those landmarks (default all 68), frames (T x H x W x 3 uint8 RGB),
                        pose (T x 6), motion (T x M)
    DIR/<clip_id>.mp4   optional video (H.264 + AAC); its frames are used when the .npz has none

A clip needs at least one of the two. Frames in the .npz are lossless and win over the .mp4,
except under a protocol that pins an encoding (`encode:`): then the frames scored are those decoded
from the .mp4 (`pinned_frames`), whose encoding is recorded, so every row is scored through the
same codec.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np

from core.types import Prediction
from core.types import Clip
import tempfile
from typing import Optional

from bench.data.video import Encoding, VideoError, codec_name, probe, read_video, write_encoded, write_mp4


class PredictionError(ValueError):
    """A prediction that cannot be scored (missing, wrong length, NaN, unreadable)."""


def validate(pred: Prediction, clip: Clip) -> Prediction:
    """Raise PredictionError for anything that would make a metric meaningless."""
    if not pred.fields():
        raise PredictionError(f"{clip.id}: prediction has neither landmarks nor frames")
    t = clip.num_frames
    for name in ("landmarks", "frames", "pose", "motion"):
        array = getattr(pred, name)
        if array is None:
            continue
        if array.shape[0] != t:
            raise PredictionError(f"{clip.id}: predicted {name} have {array.shape[0]} frames, "
                                  f"the reference has {t}")
        if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
            bad = int(np.sum(~np.isfinite(array).reshape(t, -1).all(axis=1)))
            raise PredictionError(f"{clip.id}: predicted {name} contain NaN or inf in {bad} of {t} frames")
    if pred.landmarks is not None:
        if pred.landmarks.ndim != 3 or pred.landmarks.shape[2] != 2:
            raise PredictionError(f"{clip.id}: landmarks must be T x P x 2, got {pred.landmarks.shape}")
        if pred.landmarks.shape[1] != len(pred.points):
            raise PredictionError(f"{clip.id}: {pred.landmarks.shape[1]} landmarks but {len(pred.points)} "
                                  "point indices")
        if any(not 0 <= p < 68 for p in pred.points) or len(set(pred.points)) != len(pred.points):
            raise PredictionError(f"{clip.id}: point indices must be distinct iBUG-68 indices")
    if pred.frames is not None:
        if pred.frames.dtype != np.uint8 or pred.frames.ndim != 4 or pred.frames.shape[3] != 3:
            raise PredictionError(f"{clip.id}: frames must be uint8 T x H x W x 3, got "
                                  f"{pred.frames.dtype} {pred.frames.shape}")
        if clip.has_frames and pred.frames.shape[1:3] != clip.frames.shape[1:3]:
            raise PredictionError(f"{clip.id}: frames are {pred.frames.shape[1:3]}, the reference "
                                  f"{clip.frames.shape[1:3]}")
    return pred


def save_prediction(directory: Path, pred: Prediction, clip: Clip, encoding: Optional[Encoding] = None) -> Path:
    """Write `<id>.npz` (exact arrays) and a video with the driving audio: `<id>.mp4` of the frames
    (in `encoding`, the protocol's pin, when given), or, for landmark-only predictions,
    `<id>.landmarks.mp4` (a drawing to look at, never scored)."""
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {}
    if pred.landmarks is not None:
        arrays["landmarks"] = pred.landmarks.astype(np.float32)
        arrays["points"] = np.asarray(pred.points, dtype=np.int16)
    for name in ("frames", "pose", "motion"):
        if getattr(pred, name) is not None:
            arrays[name] = getattr(pred, name)
    npz = directory / f"{pred.clip_id}.npz"
    tmp = npz.with_name(npz.name + ".tmp")
    with open(tmp, "wb") as handle:
        np.savez_compressed(handle, **arrays)
    if pred.frames is not None and encoding is not None:
        write_encoded(directory / f"{pred.clip_id}.mp4", pred.frames, clip.fps, clip.audio, clip.sample_rate,
                      encoding)
    elif pred.frames is not None:
        write_mp4(directory / f"{pred.clip_id}.mp4", pred.frames, clip.fps, clip.audio, clip.sample_rate)
    else:
        write_mp4(directory / f"{pred.clip_id}.landmarks.mp4", draw_landmarks(pred, clip), clip.fps,
                  clip.audio, clip.sample_rate)
    tmp.replace(npz)  # the .npz lands last: its presence marks a complete prediction
    return npz


def load_prediction(directory: Path, clip: Clip, fps: float, prefer_video: bool = False) -> Prediction:
    """The prediction of one clip; frames from the .npz, else from the .mp4 (from the .mp4 first
    with `prefer_video`, as a pinned encoding wants)."""
    npz, mp4 = directory / f"{clip.id}.npz", directory / f"{clip.id}.mp4"
    if not npz.exists() and not mp4.exists():
        raise PredictionError(f"{clip.id}: no prediction ({npz.name} or {mp4.name}) in {directory}")
    pred = Prediction(clip.id)
    if npz.exists():
        try:
            with np.load(npz, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except Exception as exc:
            raise PredictionError(f"{clip.id}: {npz.name} is unreadable ({exc})") from exc
        unknown = set(arrays) - {"landmarks", "points", "frames", "pose", "motion"}
        if unknown:
            raise PredictionError(f"{clip.id}: {npz.name} has unknown arrays {sorted(unknown)}")
        pred.landmarks = arrays.get("landmarks")
        if "points" in arrays:
            pred.points = tuple(int(p) for p in arrays["points"])
        pred.frames, pred.pose, pred.motion = arrays.get("frames"), arrays.get("pose"), arrays.get("motion")
    if mp4.exists() and (pred.frames is None or prefer_video):
        try:
            video = read_video(mp4)
        except VideoError as exc:
            raise PredictionError(f"{clip.id}: {exc}") from exc
        if abs(video.fps - fps) > 0.01:
            raise PredictionError(f"{clip.id}: {mp4.name} is at {video.fps:g} fps, the protocol at {fps:g}")
        pred.frames = video.frames
    return pred


def pinned_frames(directory: Path, clip: Clip, pred: Prediction, encoding: Encoding, fps: float,
                  reencode: bool = False) -> Optional[dict]:
    """Under a pinned encoding, for a `pred` loaded with `load_prediction(prefer_video=True)` (its
    frames decoded from `<id>.mp4` when there is one), return how they were encoded: {source, video_codec, pix_fmt, audio_codec, sample_rate,
    differs (what differs from the pin; empty when it matches), reencoded}. Frames given only in
    the .npz (lossless, no video file) differ from any pin. With `reencode`, frames that differ
    are encoded in the pin (with the clip's audio) and decoded again before scoring. None for a
    prediction without frames (nothing to encode)."""
    mp4 = directory / f"{clip.id}.mp4"
    if mp4.exists():
        try:
            info = probe(mp4)
        except VideoError as exc:
            raise PredictionError(f"{clip.id}: {exc}") from exc
        record = {"source": "mp4", "video_codec": codec_name(info.video_codec), "pix_fmt": info.pix_fmt,
                  "audio_codec": codec_name(info.audio_codec), "sample_rate": info.sample_rate,
                  "differs": encoding.differences(info)}
    elif pred.frames is not None:
        record = {"source": "npz", "video_codec": None, "pix_fmt": None, "audio_codec": None,
                  "sample_rate": None, "differs": ["lossless frames in the .npz, no video file"]}
    else:
        return None
    record["reencoded"] = False
    if reencode and record["differs"]:
        with tempfile.TemporaryDirectory(prefix="talkbench-reencode-") as tmp:
            path = write_encoded(Path(tmp) / f"{clip.id}.mp4", pred.frames, fps, clip.audio,
                                 clip.sample_rate or 16000, encoding)
            pred.frames = read_video(path).frames[: len(pred.frames)]
        record["reencoded"] = True
    return record


def encoding_summary(encoding: Encoding, records: dict[str, dict]) -> dict:
    """What a result records of its predictions' encodings under a pin: the pin, how many clips
    were in it, each differing clip with what differs, the re-encoded clips, and the encodings seen
    (codec / pixel format / audio codec / rate -> clips)."""
    seen: dict[str, int] = {}
    for r in records.values():
        key = "lossless .npz frames" if r["source"] == "npz" else \
            f"{r['video_codec']} {r['pix_fmt']} + {r['audio_codec']} {r['sample_rate']} Hz"
        seen[key] = seen.get(key, 0) + 1
    return {"pin": encoding.to_dict(), "clips": len(records),
            "as_pinned": sum(1 for r in records.values() if not r["differs"]),
            "differing": {c: r["differs"] for c, r in sorted(records.items()) if r["differs"]},
            "reencoded": sorted(c for c, r in records.items() if r["reencoded"]),
            "seen": dict(sorted(seen.items()))}


def frames_from_mp4(directory: Path, clip_id: str) -> bool:
    """Whether `load_prediction` takes this clip's frames from its mp4 (no frames in its .npz)."""
    npz, mp4 = directory / f"{clip_id}.npz", directory / f"{clip_id}.mp4"
    if not mp4.exists():
        return False
    if not npz.exists():
        return True
    with np.load(npz, allow_pickle=False) as data:
        return "frames" not in data.files


def prediction_hash(directory: Path, clip_id: str) -> str:
    """Hash of what a prediction's scores depend on (its .npz, else its .mp4)."""
    for name in (f"{clip_id}.npz", f"{clip_id}.mp4"):
        path = directory / name
        if path.exists():
            return hashlib.sha256(path.read_bytes()).hexdigest()
    raise PredictionError(f"{clip_id}: no prediction file in {directory}")


def draw_landmarks(pred: Prediction, clip: Clip) -> np.ndarray:
    """A viewable video for landmark-only predictions: points on a dark canvas of the frame size."""
    height, width = clip.meta.get("frame_size", (256, 256))
    out = np.full((clip.num_frames, height, width, 3), 24, dtype=np.uint8)
    for t in range(clip.num_frames):
        for x, y in pred.landmarks[t]:
            cv2.circle(out[t], (int(round(x)), int(round(y))), 2, (80, 220, 120), -1, cv2.LINE_AA)
    return out
