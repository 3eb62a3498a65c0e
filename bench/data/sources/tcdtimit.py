"""TCD-TIMIT (Harte & Gillen, 2015): 59 volunteers and 3 lipspeakers reading TIMIT sentences.

Layout as distributed (one folder per speaker; the `Clips/` level of the official archives is
optional)::

    volunteers/<id>/[Clips/]straightcam/<utt>.mp4      ids like 01M, 59F
    lipspeakers/<id>/[Clips/]straightcam/<utt>.mp4     ids Lipspkr1..Lipspkr3

Audio comes from the video's own track, or from a separate `<utt>.wav` in the same folder when
one is present (the only other location supported). The 30-degree camera is not used (the
papers use the frontal one). meta["group"] is volunteer or lipspeaker. The TIMIT sentence texts
are not part of the distribution, so `text` is None; meta["utterance"] keeps the TIMIT id (sa1,
si1234, sx56).

Option: groups (default [volunteer, lipspeaker]).
"""

from __future__ import annotations

from pathlib import Path

from bench.data.raw import DatasetError, RawItem, not_dataset, parse_options, register_source

GROUPS = {"volunteer": "volunteers", "lipspeaker": "lipspeakers"}
LAYOUT = "volunteers/<id>/straightcam/<utt>.mp4 and/or lipspeakers/<id>/straightcam/<utt>.mp4"


@register_source("tcdtimit")
def discover(root: Path, options: dict) -> list[RawItem]:
    root = Path(root)
    opts = parse_options("tcdtimit", options, {"groups": list(GROUPS)}, {"groups": GROUPS})
    if not any((root / folder).is_dir() for folder in GROUPS.values()):
        raise not_dataset("TCD-TIMIT", root, LAYOUT)
    items = []
    for group in opts["groups"]:
        base = root / GROUPS[group]
        if not base.is_dir():
            continue
        for speaker in sorted(p for p in base.iterdir() if p.is_dir()):
            for cam in (speaker / "straightcam", speaker / "Clips" / "straightcam"):
                if not cam.is_dir():
                    continue
                for video in sorted(cam.glob("*.mp4")):
                    wav = video.with_suffix(".wav")
                    items.append(RawItem(
                        id=f"{speaker.name}_{video.stem}", speaker=speaker.name, video=video,
                        audio=wav if wav.is_file() else None,
                        meta={"group": group, "utterance": video.stem}))
    ids = [item.id for item in items]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise DatasetError(f"TCD-TIMIT: utterances found twice (straightcam/ and Clips/straightcam/?): {dup[:5]}")
    return sorted(items, key=lambda item: item.id)
