"""Checks every trained method's tests share: same seed -> same weights; one clip can be overfit;
an "all_windows" epoch visits every window once."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from baselines import build_method
from baselines.base import Method
from baselines.torch_method import window_starts
from core.types import Clip, MethodInput


def assert_same_seed_same_state(make: Callable[[], Method], clips: list[Clip], seed: int) -> None:
    """Two fits from scratch with the same seed give bit-identical state (a recorded fit time,
    `fit_history.seconds` / `.cpu_seconds`, is a measurement of the run, not state, and is skipped)."""
    states = []
    for _ in range(2):
        method = make()
        method.fit(clips, [], seed=seed)
        states.append(method.state())
    assert states[0].keys() == states[1].keys()
    for key in states[0]:
        if "fit_history." in key and key.endswith("seconds"):
            continue
        assert np.array_equal(states[0][key], states[1][key]), key


def overfit_error(name: str, overrides: dict, clip: Clip, points: Sequence[int]) -> tuple[float, float]:
    """Fit `name` (tiny preset + `overrides`) on `clip` alone; return its mean error on `points`
    and, for scale, the error of repeating the first frame (px)."""
    method = build_method(name, "tiny", overrides)
    method.fit([clip], [], seed=0)
    pred = method.predict(MethodInput.from_clip(clip, method.inputs))
    idx = list(points)
    err = np.linalg.norm(pred.landmarks - clip.landmarks[:, idx], axis=-1).mean()
    static = np.linalg.norm(clip.landmarks[0, idx] - clip.landmarks[:, idx], axis=-1).mean()
    print(f"overfit one clip: {err:.3f} px mean on {len(idx)} points (static {static:.3f} px)")
    return float(err), float(static)


def assert_epoch_visits_every_window(method: Method, clips: list[Clip], window: int) -> None:
    """`method` (configured with epoch_mode all_windows and `window`-frame windows) fitted on the
    first two clips: its first epoch saw each of their non-overlapping windows once, and a batch cut
    at given starts holds exactly those frames' audio."""
    method.fit(clips[:2], [], seed=0)
    assert method.train_log[0]["windows"] == sum(len(window_starts(c.num_frames, window, window))
                                                 for c in clips[:2])
    batch = method.make_batch(clips[:2], None, "cpu", starts=[0, window])
    spf = clips[1].sample_rate // int(clips[1].fps)
    np.testing.assert_array_equal(batch["audio"][1].numpy(), clips[1].audio[window * spf:2 * window * spf])
