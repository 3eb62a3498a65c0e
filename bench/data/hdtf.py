"""HDTF (Zhang et al., CVPR 2021): ~360 clips of ~300 people from YouTube, audio in the mp4.

Clips are named `<source>_<Name>_<NNN>.mp4` with source WRA (White House / Republican addresses),
RD (Radio / Democratic) or WDA (Weekly Democratic addresses), e.g. `WRA_KellyAyotte_000.mp4`;
they may sit in sub-folders. speaker = the name without the trailing `_NNN` index
(`WRA_KellyAyotte`); meta["source"] = WRA, RD or WDA.

Option: sources (default [WRA, RD, WDA]).
"""

from __future__ import annotations

import re
from pathlib import Path

from bench.data.raw import DatasetError, RawItem, not_dataset, parse_options, register_source

SOURCES = ("WRA", "RD", "WDA")
NAME = re.compile(r"^((WRA|RD|WDA)_.+)_(\d+)$")
LAYOUT = "clips named WRA_<Name>_<NNN>.mp4, RD_... or WDA_... (e.g. WRA_KellyAyotte_000.mp4), possibly in sub-folders"


@register_source("hdtf")
def discover(root: Path, options: dict) -> list[RawItem]:
    root = Path(root)
    opts = parse_options("hdtf", options, {"sources": list(SOURCES)}, {"sources": SOURCES})
    found: dict[str, Path] = {}
    for video in sorted(root.rglob("*.mp4")):
        match = NAME.match(video.stem)
        if not match:
            continue
        if video.stem in found:
            raise DatasetError(f"HDTF: clip {video.stem} found twice: {found[video.stem]} and {video}")
        found[video.stem] = video
    if not found:
        raise not_dataset("HDTF", root, LAYOUT)
    items = []
    for stem, video in found.items():
        match = NAME.match(stem)
        speaker, source = match.group(1), match.group(2)
        if source in opts["sources"]:
            items.append(RawItem(id=stem, speaker=speaker, video=video, meta={"source": source}))
    return sorted(items, key=lambda item: item.id)
