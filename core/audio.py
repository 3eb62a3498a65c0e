"""Audio features shared by baselines and figures."""

from __future__ import annotations

import numpy as np


def frame_rms(audio: np.ndarray, sample_rate: int, fps: float, num_frames: int) -> np.ndarray:
    """RMS energy of the audio under each video frame (a window of one frame period centred on it)."""
    hop = sample_rate / fps
    half = int(round(hop / 2))
    padded = np.pad(np.asarray(audio, dtype=np.float64), (half, half + int(np.ceil(hop))))
    out = np.empty(num_frames, dtype=np.float64)
    for t in range(num_frames):
        start = int(round(t * hop))
        window = padded[start:start + 2 * half]
        out[t] = np.sqrt(np.mean(window ** 2)) if window.size else 0.0
    return out
