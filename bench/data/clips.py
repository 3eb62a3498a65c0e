"""From a protocol to clips: the dataset adapter, the pinned split, and clip windowing."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from typing import Optional

import numpy as np

from core.types import Clip
from bench.data.prepare import prepare_protocol
from bench.data.raw import DATASETS
from bench.protocol import SPLITS, Protocol, ProtocolError, resolve_split, split_clips_random, time_split_bounds




def load_splits(protocol: Protocol, progress: bool = True, root=None, workers: int = 1
                ) -> dict[str, list[Clip]]:
    """Clips of each split, windowed as the protocol says, in a stable order."""
    return prepare_splits(protocol, progress, root, workers)[0]


def prepare_splits(protocol: Protocol, progress: bool = True, root=None, workers: int = 1
                   ) -> tuple[dict[str, list[Clip]], Optional[dict]]:
    """The splits and, for a real dataset, its preparation manifest (None for synthtalk).

    Real datasets (`bench.data.raw.DATASETS` entries with a `discover`) go through `bench.data.prepare` (cached: a second
    call only reads the cache) under `root` or $TALKBENCH_DATA_<NAME>.
    """
    manifest = None
    speakers: Optional[list[str]] = None  # real datasets: every discovered speaker
    if protocol.dataset not in DATASETS:
        raise ProtocolError(f"dataset.name: {DATASETS.unknown(protocol.dataset)}")
    spec = DATASETS.get(protocol.dataset)
    if not spec.real:
        clips = spec.load(protocol, progress=progress)
    else:
        prepared = prepare_protocol(protocol, root, workers, progress)
        clips, manifest = prepared.clips, {**prepared.manifest, "manifest": str(prepared.manifest_path)}
        # A speaker whose items all failed preparation is still part of the dataset: the split
        # resolves against every discovered speaker and the failures are in the manifest.
        speakers = prepared.speakers
        if not clips:
            raise ValueError(f"dataset {protocol.dataset}: no item could be prepared; see "
                             f"{prepared.manifest_path}")
    for clip in clips:
        if abs(clip.fps - protocol.fps) > 1e-6:
            raise ProtocolError(f"clip {clip.id} is at {clip.fps} fps but the protocol asks for {protocol.fps}")
    if protocol.split["rule"] == "time":
        parts = split_by_time(clips, protocol.split)
    elif protocol.split["rule"] == "clip_random":
        chosen = {name: set(ids) for name, ids in split_clips_random([c.id for c in clips], protocol.split).items()}
        parts = {name: [c for c in clips if c.id in chosen[name]] for name in SPLITS}
    else:
        split = resolve_split(protocol, speakers or sorted({c.speaker for c in clips}))
        parts = {}
        for name in SPLITS:
            speakers = set(split.get(name, []))
            parts[name] = [c for c in clips if c.speaker in speakers]
    out = {}
    for name in SPLITS:
        chosen = sorted(parts.get(name, []), key=lambda c: c.id)
        out[name] = [w for c in chosen for w in window_part(c, name, protocol.windowing,
                                                              keep_short=protocol.split["rule"] == "time")]
    return out, manifest


def split_by_time(clips: list[Clip], rule: dict) -> dict[str, list[Clip]]:
    """Split rule `time` (person-specific video): cut every clip by time, before windowing.

    The last `test_seconds` (or `test_fraction` of the clip's frames, rounded) is test, the
    `val_seconds` before it val, the rest train (`bench.protocol.time_split_bounds`). Parts are
    named `<clip>_train`, `_val`, `_test`. A clip too short to leave any training frames is an
    error naming it.
    """
    out: dict[str, list[Clip]] = {name: [] for name in SPLITS}
    for clip in clips:
        bounds = time_split_bounds(clip.num_frames, clip.fps, rule, f"clip {clip.id}")
        for name, (start, stop) in bounds.items():
            if stop > start:
                out[name].append(cut_clip(clip, start, stop, f"{clip.id}_{name}", release_parent=True))
    return out


def cut_clip(clip: Clip, start: int, stop: int, new_id: str, release_parent: bool = False) -> Clip:
    """Frames [start, stop) of a clip (audio, every per-frame array, lazy frames) as a new clip.

    `release_parent`: once the part's frames are copied, the parent drops its own (a
    person-specific video is long); windows of a short clip keep the parent's frames loaded.
    """
    per_frame = clip.sample_rate / clip.fps
    a0, a1 = int(round(start * per_frame)), int(round(stop * per_frame))

    def cut(array):
        return None if array is None else array[start:stop]

    def frames(clip=clip):
        if not release_parent:
            return clip.frames[start:stop]
        part = clip.frames[start:stop].copy()
        clip.release_frames()
        return part

    return replace(
        clip, id=new_id, audio=clip.audio[a0:a1], landmarks=cut(clip.landmarks),
        landmarks_found=cut(clip.landmarks_found), landmarks3d=cut(clip.landmarks3d),
        pose=cut(clip.pose), aus=cut(clip.aus), motion=cut(clip.motion),
        meta={**clip.meta, "parent": clip.id, "start_frame": start},
        frames_loader=frames if clip.has_frames else None, _frames=None,
    )


def window_part(clip: Clip, part: str, windowing: dict, keep_short: bool = False) -> list[Clip]:
    """A clip of split `part` as the protocol's windowing cuts it: fixed windows where the
    windowing's `parts` name the split (every split when it names none), the whole clip elsewhere.

    `keep_short` (split rule time, where the clip is a part of the person's only video): a part
    shorter than one window stays one whole clip instead of vanishing; the manifest notes it.
    """
    if windowing["mode"] != "fixed" or part not in windowing.get("parts", SPLITS):
        return [clip]
    windows = window_clip(clip, windowing)
    return windows if windows or not keep_short else [clip]


def window_clip(clip: Clip, windowing: dict) -> list[Clip]:
    """Cut a clip into fixed windows (e.g. KFusion's 1 s at 30 fps); `whole` keeps it as is."""
    if windowing["mode"] == "whole":
        return [clip]
    size = int(round(windowing["seconds"] * clip.fps))
    hop = int(round(windowing["hop"] * clip.fps))
    return [cut_clip(clip, start, start + size, f"{clip.id}_w{k:03d}")
            for k, start in enumerate(range(0, clip.num_frames - size + 1, hop))]


def clip_hash(clip: Clip) -> str:
    """Content hash of a clip's reference data: cache keys depend on it, never on file names."""
    digest = hashlib.sha256(clip.id.encode())
    for array in (clip.audio, clip.landmarks, clip.pose, clip.aus, clip.landmarks_found):
        if array is not None:
            digest.update(np.ascontiguousarray(array).tobytes())
    # Rendered frames are a function of the landmarks and the appearance kept in `meta`.
    digest.update(json.dumps(clip.meta, sort_keys=True, default=str).encode())
    return digest.hexdigest()
