"""Report figures: a landmark overlay and per-frame mouth-opening curves against the audio."""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from core.audio import frame_rms  # noqa: E402
from core.types import Clip  # noqa: E402
from bench.data.clips import load_splits  # noqa: E402
from core.paths import talkbench_home  # noqa: E402
from bench.predictions import PredictionError, load_prediction  # noqa: E402
from bench.protocol import Protocol  # noqa: E402

log = logging.getLogger(__name__)
OVERLAY = ("landmark_overlay.png", "Predicted (colour) against reference (white) landmarks on the test "
           "clip's frame of widest mouth opening, one panel per method.")
MOUTH = ("mouth_opening.png", "Inner-lip opening (distance of points 62 and 66, pixels) per frame for "
         "each method against the reference, with the audio's RMS energy (grey, right axis).")


def mouth_opening(landmarks: np.ndarray, points: tuple[int, ...]) -> np.ndarray | None:
    if 62 not in points or 66 not in points:
        return None
    return np.linalg.norm(landmarks[:, points.index(62)] - landmarks[:, points.index(66)], axis=1)


def make_figures(protocol: Protocol, rows: list[dict], out: Path) -> list[tuple[Path, str]]:
    """Draw the figures from the runs' predictions; keep the existing ones if predictions are gone."""
    existing = [(out / name, caption) for name, caption in (OVERLAY, MOUTH) if (out / name).exists()]
    pred_dirs = {r["row"]: talkbench_home() / r["provenance"]["predictions"]
                 for r in rows if r["provenance"].get("predictions")}
    if not pred_dirs or not all(d.exists() for d in pred_dirs.values()):
        return existing
    try:
        clip = load_splits(protocol, progress=False)["test"][0]
    except Exception as exc:  # the dataset is not on this machine: keep the committed figures
        log.warning("figures not redrawn (%s)", exc)
        return existing
    preds = {}
    for row, directory in pred_dirs.items():
        try:
            pred = load_prediction(directory, clip, protocol.fps)
        except PredictionError:
            continue
        if pred.landmarks is not None:
            preds[row] = pred
    out.mkdir(parents=True, exist_ok=True)
    _overlay(clip, preds, out / OVERLAY[0])
    _mouth_curves(clip, preds, out / MOUTH[0])
    return [(out / OVERLAY[0], OVERLAY[1] + f" Clip `{clip.id}`."), (out / MOUTH[0], MOUTH[1] + f" Clip `{clip.id}`.")]


def _overlay(clip: Clip, preds: dict, path: Path) -> None:
    opening = mouth_opening(clip.landmarks, tuple(range(68)))
    t = int(np.argmax(opening))
    frame = clip.frames[t] if clip.has_frames else np.zeros((*clip.meta.get("frame_size", (256, 256)), 3), np.uint8)
    n = max(1, len(preds))
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.4), squeeze=False)
    colours = plt.cm.tab10(np.linspace(0, 1, 10))
    for ax, (k, (row, pred)) in zip(axes[0], enumerate(preds.items())):
        ax.imshow(frame)
        ax.scatter(clip.landmarks[t, :, 0], clip.landmarks[t, :, 1], s=6, c="white", label="reference")
        ax.scatter(pred.landmarks[t, :, 0], pred.landmarks[t, :, 1], s=6, color=colours[k % 10], label=row)
        ax.set_title(row, fontsize=9)
        ax.axis("off")
    fig.suptitle(f"{clip.id}, frame {t}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    clip.release_frames()


def _mouth_curves(clip: Clip, preds: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 3.2))
    time = np.arange(clip.num_frames) / clip.fps
    ax.plot(time, mouth_opening(clip.landmarks, tuple(range(68))), color="black", lw=2, label="reference")
    for row, pred in preds.items():
        curve = mouth_opening(pred.landmarks, pred.points)
        if curve is not None and row != "ground_truth":
            ax.plot(time, curve, lw=1.2, label=row)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("mouth opening (px)")
    twin = ax.twinx()
    twin.fill_between(time, frame_rms(clip.audio, clip.sample_rate, clip.fps, clip.num_frames), color="grey", alpha=0.25)
    twin.set_ylabel("audio RMS")
    ax.legend(fontsize=7, loc="upper right")
    ax.set_title(f"{clip.id}: mouth opening against audio", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
