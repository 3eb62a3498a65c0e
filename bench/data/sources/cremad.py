"""CREMA-D (Cao et al., 2014): 91 actors (1001-1091), 12 sentences, 6 emotions at 4 levels.

Layout as distributed (the CREMA-D repository)::

    VideoFlash/<actor>_<sentence>_<emotion>_<level>.flv
    AudioWAV/<actor>_<sentence>_<emotion>_<level>.wav

Emotion codes map to MEAD's names (ANG angry, DIS disgusted, FEA fear, HAP happy, NEU neutral,
SAD sad). Levels map to intensities LO 1, MD 2, HI 3; XX ("unspecified", which every neutral
clip and most of the sentences other than IEO carry) maps to 2, the middle level — except for
neutral, which gets 1 as in MEAD (its only level) and synthtalk. The original code is kept in
meta["level"]. Each item's `audio` is the .wav path, kept when absent so it is reported.

Options: emotions (MEAD-style names), levels (codes LO, MD, HI, XX), sentences (codes); default all.
"""

from __future__ import annotations

import re
from pathlib import Path

from bench.data.raw import DatasetError, RawItem, not_dataset, parse_options, register_source

EMOTION_CODES = {"ANG": "angry", "DIS": "disgusted", "FEA": "fear", "HAP": "happy", "NEU": "neutral",
                 "SAD": "sad"}
LEVELS = {"LO": 1, "MD": 2, "HI": 3, "XX": 2}
SENTENCES = {
    "IEO": "It's eleven o'clock",
    "TIE": "That is exactly what happened",
    "IOM": "I'm on my way to the meeting",
    "IWW": "I wonder what this is about",
    "TAI": "The airplane is almost full",
    "MTI": "Maybe tomorrow it will be cold",
    "IWL": "I would like a new alarm clock",
    "ITH": "I think I have a doctor's appointment",
    "DFA": "Don't forget a jacket",
    "ITS": "I think I've seen this before",
    "TSI": "The surface is slick",
    "WSI": "We'll stop in a couple of minutes",
}
ACTORS = range(1001, 1092)
NAME = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$")
LAYOUT = "VideoFlash/<actor>_<sentence>_<emotion>_<level>.flv (e.g. 1001_DFA_ANG_XX.flv) and AudioWAV/"


def intensity_of(emotion: str, level: str) -> int:
    return 1 if emotion == "neutral" else LEVELS[level]


@register_source("cremad")
def discover(root: Path, options: dict) -> list[RawItem]:
    root = Path(root)
    opts = parse_options("cremad", options,
                         {"emotions": list(EMOTION_CODES.values()), "levels": list(LEVELS),
                          "sentences": list(SENTENCES)},
                         {"emotions": EMOTION_CODES.values(), "levels": LEVELS, "sentences": SENTENCES})
    videos = root / "VideoFlash"
    if not videos.is_dir():
        raise not_dataset("CREMA-D", root, LAYOUT)
    items = []
    for video in sorted(videos.glob("*.flv")):
        match = NAME.match(video.stem)
        if not match:
            continue  # not a CREMA-D clip name
        actor, sentence, code, level = match.groups()
        if int(actor) not in ACTORS or sentence not in SENTENCES or code not in EMOTION_CODES \
                or level not in LEVELS:
            raise DatasetError(f"{video}: not a CREMA-D name (actor 1001-1091, sentence one of "
                               f"{sorted(SENTENCES)}, emotion one of {sorted(EMOTION_CODES)}, level one "
                               f"of {sorted(LEVELS)})")
        emotion = EMOTION_CODES[code]
        if emotion not in opts["emotions"] or level not in opts["levels"] \
                or sentence not in opts["sentences"]:
            continue
        items.append(RawItem(
            id=video.stem, speaker=actor, video=video, audio=root / "AudioWAV" / f"{video.stem}.wav",
            emotion=emotion, intensity=intensity_of(emotion, level), text=SENTENCES[sentence],
            meta={"sentence": sentence, "level": level}))
    if not items and not any(NAME.match(v.stem) for v in videos.glob("*.flv")):
        raise not_dataset("CREMA-D", root, LAYOUT + " — VideoFlash/ holds no such .flv file")
    return sorted(items, key=lambda item: item.id)
