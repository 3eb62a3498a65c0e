"""How prepared frames are stored: a near-lossless H.264 mp4, written one frame at a time.

Why H.264 and not raw arrays: a 256 x 256 clip is 196 KB a frame raw (MEAD alone would need
terabytes); at CRF 10 the frames of a synthtalk clip come back within ~1 grey level (PSNR > 45 dB)
at about a twentieth of the size. yuv420p halves the chroma resolution, which no landmark or
image metric here is sensitive to, and keeps the files playable anywhere. Landmarks are detected
on the frames as decoded from this file, so what a method or metric later sees is exactly what the
landmarks were measured on. Audio is kept exactly in the npz beside it (AAC is lossy).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np

CRF = 10
PRESET = "veryfast"


class Mp4Writer:
    """Stream uint8 S x S x 3 RGB frames into an H.264 mp4 (use as a context manager)."""

    def __init__(self, path: Path, fps: float, size: int) -> None:
        if size % 2:
            raise ValueError(f"preprocessing.resolution must be even for H.264 yuv420p, got {size}")
        self.path = Path(path)
        self.size = size
        self.frames = 0
        self._container = av.open(str(self.path), mode="w")
        self._stream = self._container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        self._stream.width = self._stream.height = size
        self._stream.pix_fmt = "yuv420p"
        # One encoder thread: x264's output is then bit-identical across runs and machines.
        self._stream.options = {"crf": str(CRF), "preset": PRESET, "threads": "1"}

    def write(self, frame: np.ndarray) -> None:
        if frame.shape != (self.size, self.size, 3) or frame.dtype != np.uint8:
            raise ValueError(f"frame has {frame.dtype} {frame.shape}, expected uint8 "
                             f"{self.size} x {self.size} x 3")
        for packet in self._stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        if self._container is None:
            return
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        self._container = None

    def __enter__(self) -> "Mp4Writer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def iter_stored(path: Path) -> Iterator[np.ndarray]:
    """The frames of a stored mp4, RGB uint8, in order."""
    with av.open(str(path)) as container:
        for frame in container.decode(container.streams.video[0]):
            yield frame.to_ndarray(format="rgb24")


def read_stored(path: Path, expected: int) -> np.ndarray:
    """All frames of a stored mp4 (T x S x S x 3); raises if the count is not `expected`."""
    frames = list(iter_stored(path))
    if len(frames) != expected:
        raise ValueError(f"{path}: holds {len(frames)} frames, the cache entry says {expected}; "
                         f"delete the entry's folder to prepare it again")
    return np.stack(frames)
