"""GRID audiovisual sentence corpus (Cooke et al., 2006): 34 speakers s1..s34, 1000 sentences each.

Video, one MPEG file per utterance; any of these layouts (checked in this order):

    s<k>/<utt>.mpg                   (the per-speaker video archives unpacked at the root)
    s<k>/video/mpg_6000/<utt>.mpg    (the high-quality archives, unpacked as they come)
    video/s<k>/<utt>.mpg

Separate audio (.wav), first layout present for the utterance:

    audio_25k/s<k>/<utt>.wav         (the 25 kHz audio archive)
    s<k>_50kHz/s<k>/<utt>.wav        (the 50 kHz per-speaker archives)
    audio/s<k>/<utt>.wav
    <video folder>/<utt>.wav         (next to the video)

When the tree has any audio folder (audio_25k, s<k>_50kHz, audio), every utterance is expected to
have its wav there; an absent one keeps its expected path (the speaker's audio folder, else the
first audio folder of the tree) so `check` reports it. With no audio folder at all the audio comes
from the video's own track. Speaker s21 has no video in the corpus: an utterance with audio but no
video is returned with video=None (meta["video_missing"]) and reported by `check`, never invented.

Text: from the word alignment `alignments/s<k>/<utt>.align` or `s<k>/align/<utt>.align` when
present (words in order, without sil and sp), otherwise decoded from the 6-letter utterance code
through the GRID grammar ("bbaf2n" = "bin blue at f two now"). meta["text_source"] says which.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

from bench.data.raw import DatasetError, RawItem, not_dataset, parse_options, register_source

SPEAKERS = tuple(f"s{k}" for k in range(1, 35))
COMMANDS = {"b": "bin", "l": "lay", "p": "place", "s": "set"}
COLOURS = {"b": "blue", "g": "green", "r": "red", "w": "white"}
PREPOSITIONS = {"a": "at", "b": "by", "i": "in", "w": "with"}
LETTERS = "abcdefghijklmnopqrstuvxyz"  # GRID has no "w"
DIGITS = {"z": "zero", "1": "one", "2": "two", "3": "three", "4": "four", "5": "five",
          "6": "six", "7": "seven", "8": "eight", "9": "nine"}
ADVERBS = {"a": "again", "n": "now", "p": "please", "s": "soon"}
CODE = re.compile(r"^[blps][bgrw][abiw][a-vx-z][z1-9][anps]$")
SILENCE = {"sil", "sp"}
LAYOUT = ("speaker folders s1..s34 holding <utt>.mpg (or s<k>/video/mpg_6000/, video/s<k>/), "
          "audio in audio_25k/s<k>/ or s<k>_50kHz/s<k>/, e.g. s1/bbaf2n.mpg")


def decode_utterance(code: str) -> str:
    """The sentence a GRID utterance code stands for: "bbaf2n" -> "bin blue at f two now"."""
    if not CODE.match(code):
        raise DatasetError(f"{code!r} is not a GRID utterance code (command, colour, preposition, "
                           "letter, digit, adverb — e.g. bbaf2n)")
    return " ".join((COMMANDS[code[0]], COLOURS[code[1]], PREPOSITIONS[code[2]], code[3],
                     DIGITS[code[4]], ADVERBS[code[5]]))


def read_alignment(path: Path) -> list[tuple[float, float, str]]:
    """(start s, end s, word) rows of a GRID .align file; times are in 1/25000 s (1000 per frame)."""
    rows = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 3:
            raise DatasetError(f"{path}:{n}: expected 'start end word', got {line!r}")
        rows.append((int(parts[0]) / 25000.0, int(parts[1]) / 25000.0, parts[2]))
    return rows


def alignment_text(path: Path) -> str:
    return " ".join(word for _, _, word in read_alignment(path) if word not in SILENCE)


def _video_dirs(root: Path, spk: str) -> list[Path]:
    return [root / spk, root / spk / "video" / "mpg_6000", root / "video" / spk]


def _audio_dirs(root: Path, spk: str) -> list[Path]:
    return [root / "audio_25k" / spk, root / f"{spk}_50kHz" / spk, root / "audio" / spk]


def _align_dirs(root: Path, spk: str) -> list[Path]:
    return [root / "alignments" / spk, root / spk / "align"]


def _files(folders: list[Path], suffix: str) -> dict[str, Path]:
    """utterance code -> first file with that code in the folders, earlier folders first."""
    found: dict[str, Path] = {}
    for folder in folders:
        if folder.is_dir():
            for path in sorted(folder.glob(f"*{suffix}")):
                if CODE.match(path.stem):
                    found.setdefault(path.stem, path)
    return found


@register_source("grid")
def discover(root: Path, options: dict) -> list[RawItem]:
    root = Path(root)
    parse_options("grid", options, {})
    has_audio_tree = any((root / name).is_dir() for name in ("audio_25k", "audio")) or any(
        (root / f"{spk}_50kHz").is_dir() for spk in SPEAKERS)
    items = []
    for spk in SPEAKERS:
        videos = _files(_video_dirs(root, spk), ".mpg")
        audios = _files(_audio_dirs(root, spk) + _video_dirs(root, spk), ".wav")
        aligns = _files(_align_dirs(root, spk), ".align")
        audio_home = _audio_home(root, spk) if has_audio_tree else None
        for code in sorted(set(videos) | set(audios)):
            audio: Optional[Path] = audios.get(code)
            if audio is None and audio_home is not None:
                audio = audio_home / f"{code}.wav"  # expected, absent: reported, not dropped
            meta = {"utterance": code}
            if code in aligns:
                text = alignment_text(aligns[code])
                meta.update(text_source="alignment", alignment=str(aligns[code]))
            else:
                text = decode_utterance(code)
                meta["text_source"] = "code"
            if code not in videos:
                meta["video_missing"] = True
            items.append(RawItem(id=f"{spk}_{code}", speaker=spk, video=videos.get(code),
                                 audio=audio, text=text, meta=meta))
    if not items:
        raise not_dataset("GRID", root, LAYOUT)
    return sorted(items, key=lambda item: item.id)


def _audio_home(root: Path, spk: str) -> Path:
    """Where a speaker's wav files belong: their own audio folder, else the tree's first one."""
    for folder in _audio_dirs(root, spk):
        if folder.is_dir():
            return folder
    if (root / "audio_25k").is_dir():
        return root / "audio_25k" / spk
    if (root / "audio").is_dir():
        return root / "audio" / spk
    return root / f"{spk}_50kHz" / spk
