"""Person-specific video (the NeRF talking-head setting: AD-NeRF, RAD-NeRF, ER-NeRF, GtsTalkNeRF).

One or more long .mp4 files of one person, audio in the file: every .mp4 directly under the root,
or the files named in option `videos` (paths relative to the root; a listed file that is absent
is still returned, so `check` reports it). One RawItem per whole file: the train/test cut by time
is the split rule `time` (bench.protocol), applied later, not here.

Options: person (the speaker id; default each file's stem, i.e. one person per file), videos.
"""

from __future__ import annotations

import re
from pathlib import Path

from bench.data.raw import DatasetError, RawItem, not_dataset, parse_options, register_source

SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@register_source("person_specific")
def discover(root: Path, options: dict) -> list[RawItem]:
    root = Path(root)
    opts = parse_options("person_specific", options, {"person": None, "videos": None})
    if opts["videos"] is not None:
        if not isinstance(opts["videos"], list) or not all(isinstance(v, str) for v in opts["videos"]):
            raise DatasetError(f"person_specific: option 'videos' must be a list of file names, "
                               f"got {opts['videos']!r}")
        videos = [root / name for name in opts["videos"]]
    else:
        videos = sorted(p for p in root.glob("*.mp4") if p.is_file()) if root.is_dir() else []
    if not videos:
        raise not_dataset("person-specific video", root, "one or more <name>.mp4 files directly "
                          "under the root (or option `videos` listing them)")
    person = opts["person"]
    if person is not None and (not isinstance(person, str) or not person):
        raise DatasetError(f"person_specific: option 'person' must be a non-empty string, got {person!r}")
    items = []
    for video in videos:
        stem = SAFE.sub("_", video.stem)
        items.append(RawItem(id=stem, speaker=person or stem, video=video,
                             meta={"file": video.name}))
    ids = [item.id for item in items]
    if len(set(ids)) != len(ids):
        raise DatasetError(f"person_specific: two videos give the same id: {sorted(ids)}")
    return sorted(items, key=lambda item: item.id)
