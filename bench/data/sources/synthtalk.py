"""synthtalk as a dataset: built (or found in the cache) and loaded by `bench.data.synthtalk.corpus`.

Options: ``size`` (small | medium | large | clips per speaker, default small), ``seed`` (0) and
``person`` (a speaker id such as ``spk01``, default none): with ``person``, only that speaker's
clips are loaded and joined, in corpus order, into one video (``<person>_video``: audio, landmarks,
3D landmarks, pose, AUs, motion and frames concatenated), the synthtalk stand-in for a
person-specific video (split rule ``time``). The joins are cuts between sentences, not continuous
footage: head pose and expression jump there.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from bench.data.raw import DatasetSpec, DATASETS, parse_options


def join_clips(clips: list, new_id: str):
    """One clip made of `clips` one after the other (same fps and sample rate)."""
    if not clips:
        raise ValueError(f"synthtalk: no clips to join into {new_id}")
    first = clips[0]
    if any(c.fps != first.fps or c.sample_rate != first.sample_rate for c in clips):
        raise ValueError(f"synthtalk: clips joined into {new_id} differ in fps or sample rate")

    def cat(name):
        arrays = [getattr(c, name) for c in clips]
        return None if any(a is None for a in arrays) else np.concatenate(arrays)

    def frames(clips=clips):
        out = np.concatenate([c.frames for c in clips])
        for c in clips:
            c.release_frames()
        return out

    return replace(first, id=new_id, audio=cat("audio"), landmarks=cat("landmarks"),
                   landmarks_found=cat("landmarks_found"), landmarks3d=cat("landmarks3d"), pose=cat("pose"),
                   aus=cat("aus"), motion=cat("motion"), text=" / ".join(c.text or "" for c in clips),
                   meta={**first.meta, "joined": [c.id for c in clips]},
                   frames_loader=frames, _frames=None)


def load(protocol, progress: bool = True) -> list:
    from bench.data.synthtalk import corpus

    options = parse_options("synthtalk", protocol.dataset_options, {"size": "small", "seed": 0, "person": None})
    root = corpus.build(size=options["size"], seed=int(options["seed"]), progress=progress)
    person = options["person"]
    if person is None:
        return corpus.load_clips(root)
    clips = corpus.load_clips(root, speakers=[person])
    if not clips:
        known = sorted({c.speaker for c in corpus.load_clips(root)})
        raise ValueError(f"synthtalk: option person={person!r} is not a speaker of the corpus; known: {known}")
    return [join_clips(clips, f"{person}_video")]


DATASETS.register(DatasetSpec("synthtalk", load=load))
