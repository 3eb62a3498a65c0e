"""VoxCeleb2 test set (Chung et al., 2018): 118 celebrities, clips cut from YouTube videos.

Layout as distributed (vox2_test_mp4.zip)::

    mp4/<id>/<video>/<clip>.mp4       e.g. mp4/id00017/01dfn2spqyE/00001.mp4

The root is the folder holding `mp4/`, or the `mp4/` folder itself. Audio is the clip's own AAC
track. speaker = the id; item id `<id>_<video>_<clip>`; meta["video"] = the YouTube video id.
No options.
"""

from __future__ import annotations

import re
from pathlib import Path

from bench.data.raw import RawItem, not_dataset, parse_options, register_source

SPEAKER = re.compile(r"^id\d{5}$")
LAYOUT = "mp4/<id>/<video>/<clip>.mp4 with speaker folders like id00017"


@register_source("voxceleb2")
def discover(root: Path, options: dict) -> list[RawItem]:
    root = Path(root)
    parse_options("voxceleb2", options, {})
    base = root / "mp4" if (root / "mp4").is_dir() else root
    speakers = sorted(p for p in base.iterdir() if p.is_dir() and SPEAKER.match(p.name)) \
        if base.is_dir() else []
    items = []
    for speaker in speakers:
        for video_dir in sorted(p for p in speaker.iterdir() if p.is_dir()):
            for clip in sorted(video_dir.glob("*.mp4")):
                items.append(RawItem(id=f"{speaker.name}_{video_dir.name}_{clip.stem}",
                                     speaker=speaker.name, video=clip,
                                     meta={"video": video_dir.name, "clip": clip.stem}))
    if not items:
        raise not_dataset("VoxCeleb2", root, LAYOUT)
    return sorted(items, key=lambda item: item.id)
