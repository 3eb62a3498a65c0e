"""From a protocol to clips: the dataset adapter, the pinned split, and clip windowing."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from typing import Callable

import numpy as np

from bench.clip import Clip
from bench.protocol import SPLITS, Protocol, ProtocolError, resolve_split


def _synthtalk(protocol: Protocol, progress: bool = True) -> list[Clip]:
    from bench.data.synthtalk import corpus

    options = dict(protocol.dataset_options)
    unknown = set(options) - {"size", "seed"}
    if unknown:
        raise ProtocolError(f"dataset.options: unknown option(s) {sorted(unknown)} for synthtalk")
    root = corpus.build(size=options.get("size", "small"), seed=int(options.get("seed", 0)), progress=progress)
    return corpus.load_clips(root)


ADAPTERS: dict[str, Callable[..., list[Clip]]] = {"synthtalk": _synthtalk}


def load_splits(protocol: Protocol, progress: bool = True) -> dict[str, list[Clip]]:
    """Clips of each split, windowed as the protocol says, in a stable order."""
    if protocol.dataset not in ADAPTERS:
        raise ProtocolError(f"dataset.name: unknown dataset {protocol.dataset!r}; known: {sorted(ADAPTERS)}")
    clips = ADAPTERS[protocol.dataset](protocol, progress=progress)
    for clip in clips:
        if abs(clip.fps - protocol.fps) > 1e-6:
            raise ProtocolError(f"clip {clip.id} is at {clip.fps} fps but the protocol asks for {protocol.fps}")
    split = resolve_split(protocol, sorted({c.speaker for c in clips}))
    out = {}
    for name in SPLITS:
        speakers = set(split.get(name, []))
        chosen = sorted((c for c in clips if c.speaker in speakers), key=lambda c: c.id)
        out[name] = [w for c in chosen for w in window_clip(c, protocol.windowing)]
    return out


def window_clip(clip: Clip, windowing: dict) -> list[Clip]:
    """Cut a clip into fixed windows (e.g. KFusion's 1 s at 30 fps); `whole` keeps it as is."""
    if windowing["mode"] == "whole":
        return [clip]
    size = int(round(windowing["seconds"] * clip.fps))
    hop = int(round(windowing["hop"] * clip.fps))
    per_frame = clip.sample_rate / clip.fps
    windows = []
    for k, start in enumerate(range(0, clip.num_frames - size + 1, hop)):
        stop = start + size
        a0, a1 = int(round(start * per_frame)), int(round(stop * per_frame))

        def cut(array, start=start, stop=stop):
            return None if array is None else array[start:stop]

        def frames(clip=clip, start=start, stop=stop):
            return clip.frames[start:stop]

        windows.append(replace(
            clip, id=f"{clip.id}_w{k:03d}", audio=clip.audio[a0:a1], landmarks=cut(clip.landmarks),
            landmarks3d=cut(clip.landmarks3d), pose=cut(clip.pose), aus=cut(clip.aus),
            motion=cut(clip.motion), meta={**clip.meta, "parent": clip.id, "start_frame": start},
            frames_loader=frames if clip.has_frames else None, _frames=None,
        ))
    return windows


def clip_hash(clip: Clip) -> str:
    """Content hash of a clip's reference data: cache keys depend on it, never on file names."""
    digest = hashlib.sha256(clip.id.encode())
    for array in (clip.audio, clip.landmarks, clip.pose, clip.aus):
        if array is not None:
            digest.update(np.ascontiguousarray(array).tobytes())
    # Rendered frames are a function of the landmarks and the appearance kept in `meta`.
    digest.update(json.dumps(clip.meta, sort_keys=True, default=str).encode())
    return digest.hexdigest()
