"""MEAD (Wang et al., ECCV 2020): 60 actors, 8 emotions at 3 levels, 7 camera views.

Layout as distributed (each actor's video.tar / audio.tar unpacked into the actor folder)::

    <actor>/video/<view>/<emotion>/level_<n>/<nnn>.mp4
    <actor>/audio/<emotion>/level_<n>/<nnn>.m4a

Actors are M003, W009, ... (M/W + 3 digits). Neutral exists at level_1 only. The audio of a
sentence is shared by its 7 views; each item's `audio` is that .m4a path, kept even when the file
is absent so `check` and `prepare` report it.

Options: views (default [front] — the papers use the frontal view only), emotions and levels
(default all).
"""

from __future__ import annotations

import re
from pathlib import Path

from core.constants import EMOTIONS
from bench.data.raw import RawItem, not_dataset, parse_options, register_source

EMOTION_NAMES = tuple(sorted(EMOTIONS))  # the folder names, in the order items are listed
VIEWS = ("front", "down", "left_30", "left_60", "right_30", "right_60", "top")
LEVELS = (1, 2, 3)
ACTOR = re.compile(r"^[MW]\d{3}$")
LEVEL = re.compile(r"^level_([123])$")
SENTENCE = re.compile(r"^(\d{3})\.mp4$", re.IGNORECASE)
LAYOUT = "<actor>/video/<view>/<emotion>/level_<n>/<nnn>.mp4 with actor folders like M003, W009"


@register_source("mead")
def discover(root: Path, options: dict) -> list[RawItem]:
    root = Path(root)
    opts = parse_options("mead", options, {"views": ["front"], "emotions": list(EMOTION_NAMES),
                                           "levels": list(LEVELS)},
                         {"views": VIEWS, "emotions": EMOTION_NAMES, "levels": LEVELS})
    actors = sorted(p for p in root.iterdir() if p.is_dir() and ACTOR.match(p.name)
                    and (p / "video").is_dir()) if root.is_dir() else []
    if not actors:
        raise not_dataset("MEAD", root, LAYOUT)
    items = []
    for actor in actors:
        for view in opts["views"]:
            for emotion in opts["emotions"]:
                folder = actor / "video" / view / emotion
                if not folder.is_dir():
                    continue
                for level_dir in sorted(folder.iterdir()):
                    match = LEVEL.match(level_dir.name)
                    if not match or int(match.group(1)) not in opts["levels"]:
                        continue
                    level = int(match.group(1))
                    for video in sorted(level_dir.iterdir()):
                        name = SENTENCE.match(video.name)
                        if not name or not video.is_file():
                            continue
                        sentence = name.group(1)
                        audio = actor / "audio" / emotion / level_dir.name / f"{sentence}.m4a"
                        items.append(RawItem(
                            id=f"{actor.name}_{view}_{emotion}_{level}_{sentence}",
                            speaker=actor.name, video=video, audio=audio, emotion=emotion,
                            intensity=level, meta={"view": view, "sentence": sentence}))
    return sorted(items, key=lambda item: item.id)
