"""Report figures: a landmark overlay, per-frame mouth-opening curves against the audio, and (for
rows that generate video) the test clip's frames at 4 time points with the mouth crop enlarged.

The figures are drawn from small arrays the run saves into the results folder while it has the
clips and the predictions (`save_reference`, `save_row`): `figures/_reference.npz` (the figure
clip's reference landmarks, its frame of widest mouth opening and the audio's RMS per frame) and
`figures/<row>.npz` (that row's predicted landmarks of the clip, and its frames at the 4 time
points `frame_times` when it outputs frames). `make_figures` reads only those,
so a report is rebuilt without the dataset or the predictions.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from core.audio import frame_rms  # noqa: E402
from core.types import Clip, Prediction  # noqa: E402

log = logging.getLogger(__name__)
REFERENCE = "_reference.npz"
OVERLAY = ("landmark_overlay.png", "Predicted (colour) against reference (white) landmarks on the test "
           "clip's frame of widest mouth opening, one panel per method.")
FRAMES = ("frames.png", "Ground truth and each video-generating method at 4 time points of the test "
          "clip (top), with the mouth region (the reference mouth points' box, grown by half its size) "
          "enlarged 3x below each frame.")
MOUTH = ("mouth_opening.png", "Inner-lip opening (distance of points 62 and 66, pixels) per frame for "
         "each method against the reference, with the audio's RMS energy (grey, right axis).")


def mouth_opening(landmarks: np.ndarray, points: tuple[int, ...]) -> np.ndarray | None:
    if 62 not in points or 66 not in points:
        return None
    return np.linalg.norm(landmarks[:, points.index(62)] - landmarks[:, points.index(66)], axis=1)


def frame_times(num_frames: int, count: int = 4) -> np.ndarray:
    """`count` frame indices spread over the clip (the middle of each of `count` equal parts)."""
    return np.minimum(((np.arange(count) + 0.5) * num_frames / count).astype(np.int64), num_frames - 1)


def figure_clip(clips: list[Clip]) -> Clip:
    """The clip the figures show: the first test clip."""
    return clips[0]


def save_reference(folder: Path, clip: Clip) -> Path:
    """`folder/_reference.npz`: what the figures need of the clip itself."""
    folder.mkdir(parents=True, exist_ok=True)
    t = int(np.argmax(mouth_opening(clip.landmarks, tuple(range(68)))))
    times = frame_times(clip.num_frames)
    if clip.has_frames:
        frame = np.asarray(clip.frames[t], dtype=np.uint8)
        strip = np.asarray(clip.frames[times], dtype=np.uint8)
        clip.release_frames()
    else:
        frame = np.zeros((*clip.meta.get("frame_size", (256, 256)), 3), np.uint8)
        strip = np.zeros((0, *frame.shape), np.uint8)
    path = folder / REFERENCE
    np.savez_compressed(path, clip_id=np.array(clip.id), fps=np.array(clip.fps, dtype=np.float64),
                        landmarks=np.asarray(clip.landmarks, dtype=np.float32), frame=frame,
                        frame_index=np.array(t), strip=strip, strip_times=times,
                        rms=frame_rms(clip.audio, clip.sample_rate, clip.fps, clip.num_frames))
    return path


def save_row(folder: Path, row: str, clip: Clip, pred: Optional[Prediction]) -> Optional[Path]:
    """`folder/<row>.npz`: the row's predicted landmarks of the figure clip and its frames at
    `frame_times` (removed if it has neither)."""
    path = folder / f"{row}.npz"
    if pred is None or (pred.landmarks is None and pred.frames is None):
        path.unlink(missing_ok=True)
        return None
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {"clip_id": np.array(clip.id), "points": np.asarray(pred.points, dtype=np.int64)}
    if pred.landmarks is not None:
        arrays["landmarks"] = np.asarray(pred.landmarks, dtype=np.float32)
    if pred.frames is not None:
        arrays["strip"] = np.asarray(pred.frames[frame_times(len(pred.frames))], dtype=np.uint8)
    np.savez_compressed(path, **arrays)
    return path


def make_figures(rows: list[str], folder: Path) -> list[tuple[Path, str]]:
    """Draw the figures of these rows from the saved arrays in `folder`; [] if there are none."""
    if not (folder / REFERENCE).is_file():
        return []
    with np.load(folder / REFERENCE) as d:
        ref = {k: d[k] for k in d.files}
    clip_id = str(ref["clip_id"])
    preds: dict[str, tuple[np.ndarray, tuple[int, ...]]] = {}
    strips: dict[str, np.ndarray] = {}
    for row in rows:
        path = folder / f"{row}.npz"
        if not path.is_file():
            continue
        with np.load(path) as d:
            if str(d["clip_id"]) != clip_id:  # saved for another figure clip: stale
                log.warning("figures: %s shows clip %s, not %s; left out", path, d["clip_id"], clip_id)
                continue
            if "landmarks" in d.files:
                preds[row] = (d["landmarks"], tuple(int(p) for p in d["points"]))
            if "strip" in d.files and row != "ground_truth":
                strips[row] = d["strip"]
    _overlay(clip_id, ref, preds, folder / OVERLAY[0])
    _mouth_curves(clip_id, ref, preds, folder / MOUTH[0])
    out = [(folder / OVERLAY[0], OVERLAY[1] + f" Clip `{clip_id}`."),
           (folder / MOUTH[0], MOUTH[1] + f" Clip `{clip_id}`.")]
    if strips and "strip" in ref and len(ref["strip"]):
        _frames(clip_id, ref, strips, folder / FRAMES[0])
        out.append((folder / FRAMES[0], FRAMES[1] + f" Clip `{clip_id}`."))
    return out


def _mouth_box(landmarks: np.ndarray, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the mouth points' box grown by half its size on each side."""
    pts = landmarks[48:68]
    (x0, y0), (x1, y1) = pts.min(0), pts.max(0)
    mx, my = 0.5 * (x1 - x0) + 2, 0.5 * (y1 - y0) + 2
    h, w = shape
    return (max(0, int(y0 - my)), min(h, int(np.ceil(y1 + my))), max(0, int(x0 - mx)), min(w, int(np.ceil(x1 + mx))))


def _frames(clip_id: str, ref: dict, strips: dict, path: Path) -> None:
    import cv2

    times = ref["strip_times"]
    rows = {"ground truth": ref["strip"], **strips}
    n = len(times)
    fig, axes = plt.subplots(2 * len(rows), n, figsize=(2.0 * n, 2.0 * 2 * len(rows)), squeeze=False,
                             gridspec_kw={"height_ratios": [1, 0.6] * len(rows)})
    for r, (name, strip) in enumerate(rows.items()):
        for c, t in enumerate(times):
            frame = strip[c]
            top, bottom, left, right = _mouth_box(ref["landmarks"][int(t)], frame.shape[:2])
            crop = frame[top:bottom, left:right]
            if crop.size:
                crop = cv2.resize(crop, (3 * crop.shape[1], 3 * crop.shape[0]), interpolation=cv2.INTER_NEAREST)
            axes[2 * r, c].imshow(frame)
            axes[2 * r, c].add_patch(plt.Rectangle((left, top), right - left, bottom - top, fill=False,
                                                   edgecolor="yellow", lw=0.8))
            axes[2 * r + 1, c].imshow(crop if crop.size else np.zeros((1, 1, 3), np.uint8))
            axes[2 * r, c].set_title(f"{name}, frame {int(t)}", fontsize=7)
            axes[2 * r, c].axis("off")
            axes[2 * r + 1, c].axis("off")
    fig.suptitle(f"{clip_id}: frames and mouth crops (x3)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _overlay(clip_id: str, ref: dict, preds: dict, path: Path) -> None:
    t, landmarks = int(ref["frame_index"]), ref["landmarks"]
    n = max(1, len(preds))
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.4), squeeze=False)
    colours = plt.cm.tab10(np.linspace(0, 1, 10))
    for ax, (k, (row, (pred, points))) in zip(axes[0], enumerate(preds.items())):
        ax.imshow(ref["frame"])
        ax.scatter(landmarks[t, :, 0], landmarks[t, :, 1], s=6, c="white", label="reference")
        ax.scatter(pred[t, :, 0], pred[t, :, 1], s=6, color=colours[k % 10], label=row)
        ax.set_title(row, fontsize=9)
        ax.axis("off")
    fig.suptitle(f"{clip_id}, frame {t}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _mouth_curves(clip_id: str, ref: dict, preds: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 3.2))
    landmarks = ref["landmarks"]
    time = np.arange(len(landmarks)) / float(ref["fps"])
    ax.plot(time, mouth_opening(landmarks, tuple(range(68))), color="black", lw=2, label="reference")
    for row, (pred, points) in preds.items():
        curve = mouth_opening(pred, points)
        if curve is not None and row != "ground_truth":
            ax.plot(time, curve, lw=1.2, label=row)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("mouth opening (px)")
    twin = ax.twinx()
    twin.fill_between(time, ref["rms"], color="grey", alpha=0.25)
    twin.set_ylabel("audio RMS")
    ax.legend(fontsize=7, loc="upper right")
    ax.set_title(f"{clip_id}: mouth opening against audio", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
