"""`talkbench perf prepare`: how fast the preprocessing pipeline runs, cold, with 1 and N workers.

Input: synthtalk clips rendered at 512 x 512 and placed on a 640 x 512 canvas (so the crop has
work to do), written as H.264 + AAC mp4 like a real dataset's files. Each worker count prepares
all of them into a fresh, empty cache with the `landmark_box` crop to 256 px and dlib landmarks,
and the command prints frames per second (prepared output frames over wall-clock seconds, worker
start-up included).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.data.raw import RawItem

PREPROCESSING = {"fps": 25, "resolution": 256, "crop": "landmark_box", "crop_params": {"detect_size": 256},
                 "landmark_backend": "dlib", "pose_backend": "pnp"}


def build_inputs(folder: Path, clips: int, seed: int = 0) -> list[RawItem]:
    """`clips` synthtalk clips as 640 x 512 mp4 files (speakers in turn)."""
    from bench.data.synthtalk import corpus, render
    from bench.data.video import write_mp4

    items = []
    speakers = len(corpus.VOICES)
    for k in range(clips):
        number, index = k % speakers + 1, k // speakers
        identity, look = corpus.speaker_identity(seed, number)
        arrays, entry = corpus.make_clip(seed, number, index, identity)
        faces = render.render_frames(arrays["landmarks"], look, 512)
        canvas = np.zeros((len(faces), 512, 640, 3), np.uint8)
        canvas[:, :, 64:576] = faces
        path = write_mp4(folder / f"{entry['id']}.mp4", canvas, corpus.FPS, arrays["audio"])
        items.append(RawItem(entry["id"], entry["speaker"], path))
    return items


def time_prepare(items: list[RawItem], workers: int, preprocessing: dict = PREPROCESSING) -> dict:
    """Prepare `items` cold into a throwaway cache; frames, seconds and frames/s."""
    from bench.data.prepare import Settings, prepare_items

    settings = Settings.from_preprocessing(preprocessing)
    root = Path(tempfile.mkdtemp(prefix="talkbench-perf-"))
    try:
        start = time.perf_counter()
        entries = prepare_items(items, settings, workers=workers, progress=False, root=root)
        seconds = time.perf_counter() - start
    finally:
        shutil.rmtree(root, ignore_errors=True)
    frames = sum(e["frames"] for e in entries.values())
    failed = {i: e["reason"] for i, e in entries.items() if e["status"] != "ok"}
    return {"workers": workers, "frames": frames, "seconds": seconds,
            "fps": frames / seconds if seconds > 0 else float("nan"), "failed": failed}


def cli_perf_prepare(args) -> int:
    counts = [int(w) for w in str(args.workers).split(",") if w.strip()]
    if not counts or min(counts) < 1:
        raise ValueError(f"--workers: expected comma-separated positive counts, got {args.workers!r}")
    if args.clips < 1:
        raise ValueError(f"--clips: expected at least 1, got {args.clips}")
    folder = Path(tempfile.mkdtemp(prefix="talkbench-perf-inputs-"))
    try:
        items = build_inputs(folder, args.clips)
        print(f"{len(items)} input videos, 640x512 at 25 fps; preprocessing {PREPROCESSING}")
        for workers in counts:
            got = time_prepare(items, workers)
            line = (f"workers={got['workers']}: {got['frames']} frames in {got['seconds']:.1f} s "
                    f"= {got['fps']:.1f} frames/s")
            if got["failed"]:
                line += f"  (failed: {got['failed']})"
            print(line)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0
