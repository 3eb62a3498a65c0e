"""A look at the corpus: a contact sheet (frames with landmarks) and a short video with sound."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from core.types import Clip

SHEET_COLUMNS = 6  # frames per clip, evenly spaced in time
SHEET_ROWS = 8  # clips, one per speaker as far as possible
VIDEO_CLIPS = 4


def _pick(clips: Sequence[Clip], count: int) -> list[Clip]:
    """Up to `count` clips, taking each speaker's first clip before anyone's second."""
    by_speaker: dict[str, list[Clip]] = {}
    for clip in clips:
        by_speaker.setdefault(clip.speaker, []).append(clip)
    picked, depth = [], 0
    while len(picked) < count and any(depth < len(v) for v in by_speaker.values()):
        picked += [v[depth] for v in by_speaker.values() if depth < len(v)][: count - len(picked)]
        depth += 1
    return picked


def _overlay(frame: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Landmarks as small dots blended at 50 %, so the face stays visible under them."""
    dots = frame.copy()
    for x, y in np.round(landmarks * 4).astype(int):
        cv2.circle(dots, (int(x), int(y)), 4, (0, 255, 120), -1, cv2.LINE_AA, 2)
    return cv2.addWeighted(frame, 0.5, dots, 0.5, 0.0)


def contact_sheet(clips: Sequence[Clip], columns: int = SHEET_COLUMNS, rows: int = SHEET_ROWS
                  ) -> np.ndarray:
    """RGB image: one row per clip (id, emotion, text as a caption), frames across the clip."""
    tiles = []
    for clip in _pick(clips, rows):
        index = np.linspace(0, clip.num_frames - 1, columns).round().astype(int)
        frames = clip.frames
        row = [_overlay(frames[t], clip.landmarks[t]) for t in index]
        for line, text in enumerate((f"{clip.id} {clip.emotion} {clip.intensity}", clip.text or "")):
            cv2.putText(row[0], text, (4, 14 + 14 * line), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                        (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(np.concatenate(row, axis=1))
        clip.release_frames()
    if not tiles:
        raise ValueError("no clips to preview")
    return np.concatenate(tiles, axis=0)


def write_preview(clips: Sequence[Clip], out_dir: Path) -> tuple[Path, Path]:
    """Write `contact_sheet.png` and `preview.mp4` (a few clips one after another, with their
    audio) into `out_dir`; return both paths."""
    from bench.data.video import write_mp4

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sheet_path = out_dir / "contact_sheet.png"
    sheet = contact_sheet(clips)
    if not cv2.imwrite(str(sheet_path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {sheet_path}")

    chosen = _pick(clips, VIDEO_CLIPS)
    fps, rate = chosen[0].fps, chosen[0].sample_rate
    if any(c.fps != fps or c.sample_rate != rate for c in chosen):
        raise ValueError("preview clips must share fps and sample rate")
    frames = np.concatenate([c.frames for c in chosen])
    # Each clip's audio covers exactly its frames, so the joined audio stays in sync.
    audio = np.concatenate([c.audio[: int(round(c.num_frames * rate / fps))] for c in chosen])
    for c in chosen:
        c.release_frames()
    video_path = write_mp4(out_dir / "preview.mp4", frames, fps, audio, rate)
    return sheet_path, Path(video_path)
