"""HDTF (Zhang et al., CVPR 2021): ~360 clips of ~300 people from YouTube, audio in the mp4.

Clips are named `<source>_<Name>_<NNN>.mp4` with source WRA (White House / Republican addresses),
RD (Radio / Democratic) or WDA (Weekly Democratic addresses), e.g. `WRA_KellyAyotte_000.mp4`;
they may sit in sub-folders. `<Name>` is the YouTube video's name in the HDTF release lists
(`HDTF_dataset/*_video_url.txt`), which numbers several videos of one person (`CoryGardner`,
`CoryGardner0`, `CoryGardner1`). speaker = the person, so that a speaker-disjoint split keeps all
of a person's videos on one side: `<source>_<Name without trailing digits>` for WRA and WDA
(`WRA_CoryGardner`), with the one alias the lists hold (`WhipJimClyburn` is `JamesClyburn`); RD
names are programme numbers (`Radio34`), not people, and stay whole (`RD_Radio34`).
meta["source"] = WRA, RD or WDA; meta["video"] = `<Name>`.

Option: sources (default [WRA, RD, WDA]).
"""

from __future__ import annotations

import re
from pathlib import Path

from bench.data.raw import DatasetError, RawItem, not_dataset, parse_options, register_source

SOURCES = ("WRA", "RD", "WDA")
NAME = re.compile(r"^((WRA|RD|WDA)_(.+))_(\d+)$")
ALIASES = {"WhipJimClyburn": "JamesClyburn"}  # one person under two names in the WDA list


def speaker_of(source: str, video_name: str) -> str:
    """The person a clip shows (see the module docstring)."""
    if source == "RD":
        return f"RD_{video_name}"
    person = re.sub(r"\d+$", "", video_name)
    return f"{source}_{ALIASES.get(person, person)}"

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
        source, name = match.group(2), match.group(3)
        if source in opts["sources"]:
            items.append(RawItem(id=stem, speaker=speaker_of(source, name), video=video,
                                 meta={"source": source, "video": name}))
    return sorted(items, key=lambda item: item.id)
