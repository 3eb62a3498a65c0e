"""Reading and writing talking-head videos: H.264 frames + AAC audio in mp4, through PyAV."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Optional

import av
import numpy as np


class VideoError(Exception):
    """A video that cannot be read (corrupt, truncated, no video stream)."""


@dataclass
class VideoData:
    frames: np.ndarray  # T x H x W x 3 uint8 RGB
    fps: float
    audio: Optional[np.ndarray]  # float32 mono, or None when the file has no audio stream
    sample_rate: Optional[int]


def write_mp4(path: Path, frames: np.ndarray, fps: float, audio: Optional[np.ndarray] = None,
              sample_rate: int = 16000, crf: int = 18) -> Path:
    """Write uint8 T x H x W x 3 RGB frames (and mono float audio in [-1, 1]) as H.264 + AAC."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 T x H x W x 3, got {frames.dtype} {frames.shape}")
    height, width = frames.shape[1:3]
    if height % 2 or width % 2:  # yuv420p needs even sizes
        frames = frames[:, : height - height % 2, : width - width % 2]
    tmp = path.with_name(path.name + ".tmp.mp4")
    with av.open(str(tmp), mode="w") as container:
        vstream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        vstream.width, vstream.height = frames.shape[2], frames.shape[1]
        vstream.pix_fmt = "yuv420p"
        vstream.options = {"crf": str(crf), "preset": "veryfast"}
        astream = None
        if audio is not None:
            astream = container.add_stream("aac", rate=sample_rate)
            astream.layout = "mono"
        for image in frames:
            for packet in vstream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in vstream.encode():
            container.mux(packet)
        if astream is not None:
            samples = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)[None, :]
            aframe = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            aframe.sample_rate = sample_rate
            aframe.pts = 0  # lets the encoder give its priming packets negative pts -> mp4 edit list
            aframe.time_base = Fraction(1, sample_rate)
            for packet in astream.encode(aframe):
                container.mux(packet)
            for packet in astream.encode():
                container.mux(packet)
    tmp.replace(path)
    return path


def read_video(path: Path, sample_rate: Optional[int] = 16000) -> VideoData:
    """Decode every frame (RGB) and the audio (mono float32, resampled to `sample_rate`)."""
    path = Path(path)
    if not path.exists():
        raise VideoError(f"{path}: no such file")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError(f"{path}: no video stream")
            vstream = container.streams.video[0]
            fps = float(vstream.average_rate or vstream.guessed_rate or 0)
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(vstream)]
        audio, rate = _read_audio(path, sample_rate)
    except av.error.FFmpegError as exc:
        raise VideoError(f"{path}: unreadable video ({exc})") from exc
    if not frames:
        raise VideoError(f"{path}: no decodable frames")
    return VideoData(np.stack(frames), fps, audio, rate)


def _read_audio(path: Path, sample_rate: Optional[int]) -> tuple[Optional[np.ndarray], Optional[int]]:
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return None, None
        stream = container.streams.audio[0]
        rate = sample_rate or stream.rate
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        chunks = []
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1))
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().reshape(-1))
    audio = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    return audio, rate
