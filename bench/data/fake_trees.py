"""Small dataset trees in each real dataset's distributed layout, made from synthtalk renders.

Tests (and anyone trying `talkbench data check` / `prepare` without the real corpora) need trees
that look exactly like MEAD, CREMA-D, GRID, TCD-TIMIT, HDTF, VoxCeleb2 and person-specific video
on disk: the same folder and file names, and real encoded files in the containers and codecs the
corpora ship in (mp4 H.264 + AAC, m4a AAC, flv Flash video + MP3, mpg MPEG-1 + MP2, wav PCM).
Each clip is a synthtalk performance: real espeak-ng speech of the clip's sentence and the
rendered synthtalk face animated by it, centred in a frame with the dataset's aspect ratio (so a
centre-square crop contains the face).

`defects` injects the failures the data tools must catch:
  truncated      one video cut to 40% of its bytes (mp4: the index at the end is lost, the file
                 is unreadable; flv/mpg: its packets stop early)
  no_face        one clip's frames show only the background
  missing_audio  one separate audio file deleted; where the audio lives in the video
                 (TCD-TIMIT, HDTF, VoxCeleb2, person-specific) the video's audio stream is removed
`FakeTree.affected` names the item id each defect hit.

Framing: by default the face fills a height x height square centred in the frame. `frame_size`
(width, height) and `face_box` (left, top, side) change that, e.g. an ordinary 16:9
person-specific video with the face off centre (`WIDE_PERSON`).

Frame rate is 25 fps for every dataset (synthtalk's rate; MEAD, CREMA-D and TCD-TIMIT are 30 fps
as distributed — the preprocessing resamples either way).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from bench.data.synthtalk import corpus, face, render, speech
from bench.data.video import strip_audio, write_audio, write_video

DATASETS = ("mead", "cremad", "grid", "tcdtimit", "hdtf", "voxceleb2", "person_specific")
DEFECTS = ("truncated", "no_face", "missing_audio")
DEFAULT_SPEAKERS = {
    "mead": ["M003", "W009"],
    "cremad": ["1001", "1002"],
    "grid": ["s1", "s2"],
    "tcdtimit": ["01M", "Lipspkr1"],
    "hdtf": ["WRA_KellyAyotte", "RD_Radio34"],
    "voxceleb2": ["id00017", "id00061"],
    "person_specific": ["obama", "may"],
}
# Frame size (width, height) with each corpus's aspect ratio, small enough to encode fast.
FRAME_SIZE = {
    "mead": (320, 180), "cremad": (320, 240), "grid": (360, 288), "tcdtimit": (320, 180),
    "hdtf": (320, 180), "voxceleb2": (224, 224), "person_specific": (256, 256),
}
# An ordinary 16:9 talking-head video (640 x 360, the face a 200 px square left of centre), for
# build_fake_tree(..., frame_size=WIDE_PERSON["frame_size"], face_box=WIDE_PERSON["face_box"]).
WIDE_PERSON = {"frame_size": (640, 360), "face_box": (180, 100, 200)}
# Datasets whose audio normally lives in the video (missing_audio strips the stream there).
AUDIO_IN_VIDEO = {"tcdtimit", "hdtf", "voxceleb2", "person_specific"}


@dataclass
class FakeClip:
    """One planned recording: where its files go and what is said in it."""

    id: str
    speaker: str
    video: Optional[Path]
    audio: Optional[Path] = None  # separate audio file, if the layout has one
    emotion: str = "neutral"
    intensity: int = 1
    words: list[str] = field(default_factory=list)
    extra_videos: list[Path] = field(default_factory=list)  # other camera views of the same take
    alignment: Optional[Path] = None  # GRID .align file to write from the word timings
    seconds: Optional[float] = None  # length override (person-specific long videos)


@dataclass
class FakeTree:
    dataset: str
    root: Path
    speakers: list[str]
    clips: list[FakeClip]  # every take written (ids as the adapter names them with default options)
    affected: dict[str, str]  # defect -> item id it was applied to
    texts: dict[str, str]  # item id -> the sentence spoken

    @property
    def ids(self) -> list[str]:
        return sorted(c.id for c in self.clips)

    def clip(self, item_id: str) -> FakeClip:
        return next(c for c in self.clips if c.id == item_id)


def build_fake_tree(dataset: str, root: Path, speakers: Optional[list[str]] = None,
                    clips_per_speaker: int = 2, seconds: float = 1.2, defects=(), seed: int = 0,
                    frame_size: Optional[tuple[int, int]] = None,
                    face_box: Optional[tuple[int, int, int]] = None) -> FakeTree:
    """Write a small `dataset` tree under `root` and describe it (see the module docstring)."""
    if dataset not in DATASETS:
        raise ValueError(f"no fake tree for {dataset!r}; known: {list(DATASETS)}")
    bad = [d for d in defects if d not in DEFECTS]
    if bad:
        raise ValueError(f"unknown defects {bad}; known: {list(DEFECTS)}")
    root = Path(root)
    width, height = frame_size or FRAME_SIZE[dataset]
    if width % 2 or height % 2:
        raise ValueError(f"frame_size {width}x{height}: H.264 needs even sides")
    left, top, side = face_box or ((width - height) // 2, 0, height)
    if left < 0 or top < 0 or side < 1 or left + side > width or top + side > height:
        raise ValueError(f"face_box {(left, top, side)} does not fit a {width}x{height} frame")
    framing = (width, height, left, top, side)
    speakers = list(speakers or DEFAULT_SPEAKERS[dataset])
    rng = np.random.default_rng(seed)
    clips = _PLANS[dataset](root, speakers, clips_per_speaker, rng)
    if dataset == "person_specific":  # one long video per person, several sentences long
        for clip in clips:
            clip.seconds = seconds * clips_per_speaker
    no_face_id = clips[0].id if "no_face" in defects else None
    texts = {}
    for number, spk in enumerate(speakers, 1):
        identity, look = corpus.speaker_identity(seed, (number - 1) % len(corpus.VOICES) + 1)
        voice = corpus.VOICES[(number - 1) % len(corpus.VOICES)]
        for index, clip in enumerate(c for c in clips if c.speaker == spk):
            texts[clip.id] = " ".join(clip.words)
            _write_clip(dataset, clip, voice, identity, look, clip.seconds or seconds,
                        np.random.default_rng([seed, number, index]), clip.id == no_face_id,
                        framing)
    affected = _apply_defects(dataset, clips, defects)
    return FakeTree(dataset, root, speakers, clips, affected, texts)


# ----------------------------------------------------------------------------- writing a take

def _write_clip(dataset: str, clip: FakeClip, voice: corpus.Speaker, identity, look, seconds: float,
                rng: np.random.Generator, no_face: bool, framing: tuple[int, int, int, int, int]
                ) -> None:
    # GRID-grammar sentences name letters ("bin blue at f ..."): say the letter's name.
    spoken = clip.words if dataset == "cremad" else [
        speech.LETTER_NAMES.get(w, w) if len(w) == 1 else w for w in clip.words]
    said = speech.synthesize(clip.words, spoken=spoken,
                             **corpus._voice_for(voice, clip.emotion, clip.intensity))
    num_frames = max(1, int(round(seconds * face.FPS)))
    audio = np.zeros(num_frames * face.SAMPLES_PER_FRAME, np.float32)
    audio[: min(len(audio), len(said.audio))] = said.audio[: len(audio)]
    width, height, left, top, side = framing
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    frames[:] = look.background
    if not no_face:
        track = face.animate(said.phonemes, audio, identity, clip.emotion, clip.intensity, rng)
        # The face is drawn in a side x side square at (left, top) (default: height x height, centred).
        square = render.render_frames(track.landmarks, look, side)
        frames[:, top:top + side, left:left + side] = square
    # Video files carry the sound too, as in every one of these corpora; the separate file (where
    # the layout has one) is what the adapter points `RawItem.audio` at.
    for video in [clip.video, *clip.extra_videos]:
        if video is not None:
            write_video(video, frames, face.FPS, audio, face.SAMPLE_RATE)
    if clip.audio is not None:
        rate = 25000 if "audio_25k" in clip.audio.parts else 50000 if any(
            p.endswith("_50kHz") for p in clip.audio.parts) else face.SAMPLE_RATE
        write_audio(clip.audio, audio, face.SAMPLE_RATE, rate)
    if clip.alignment is not None:
        _write_alignment(clip.alignment, said.words, seconds)


def _write_alignment(path: Path, words: list[tuple[str, float, float]], seconds: float) -> None:
    """A GRID .align file (start end word, in 1/25000 s) with sil around the words that fit."""
    units = lambda t: int(round(min(t, seconds) * 25000))  # noqa: E731
    rows, cursor = [], 0
    for word, start, end in words:
        if start >= seconds:
            break
        if units(start) > cursor:
            rows.append((cursor, units(start), "sil" if not rows else "sp"))
        rows.append((units(start), units(end), word))
        cursor = units(end)
    if cursor < units(seconds):
        rows.append((cursor, units(seconds), "sil"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{a} {b} {w}\n" for a, b, w in rows))


def _apply_defects(dataset: str, clips: list[FakeClip], defects) -> dict[str, str]:
    """Damage distinct clips (as far as there are enough): no_face the first (done while
    writing), missing_audio the second, truncated the last one that has a video."""
    affected = {}
    if "no_face" in defects:
        affected["no_face"] = clips[0].id
    if "missing_audio" in defects:
        clip = clips[1 % len(clips)]
        if dataset in AUDIO_IN_VIDEO or clip.audio is None:
            clip = next((c for c in clips[1:] + clips[:1] if c.audio is None and c.video), clip)
            strip_audio(clip.video)
        else:
            clip.audio.unlink()
        affected["missing_audio"] = clip.id
    if "truncated" in defects:
        clip = [c for c in clips if c.video is not None][-1]
        data = clip.video.read_bytes()
        clip.video.write_bytes(data[: len(data) * 4 // 10])
        affected["truncated"] = clip.id
    return affected


# ----------------------------------------------------------------------------- layouts

def _sentence(rng: np.random.Generator) -> list[str]:
    return speech.grid_sentence(rng)[0]


_MEAD_EMOTIONS = ("angry", "happy", "neutral", "sad", "surprised", "fear", "disgusted", "contempt")


def _plan_mead(root, speakers, per_speaker, rng):
    clips = []
    for spk in speakers:
        for i in range(per_speaker):
            emotion = _MEAD_EMOTIONS[i % len(_MEAD_EMOTIONS)]
            level = 1 if emotion == "neutral" else 3 - i % 3
            sentence = f"{i + 1:03d}"
            rel = Path(emotion) / f"level_{level}"
            video = root / spk / "video" / "front" / rel / f"{sentence}.mp4"
            # The first take of each actor is also filmed from the left (30 degrees): the
            # `views` option must keep it out by default.
            extra = [root / spk / "video" / "left_30" / rel / f"{sentence}.mp4"] if i == 0 else []
            clips.append(FakeClip(f"{spk}_front_{emotion}_{level}_{sentence}", spk, video,
                              root / spk / "audio" / rel / f"{sentence}.m4a", emotion, level,
                              _sentence(rng), extra))
    return clips


_CREMAD = (("DFA", "ANG", "HI"), ("IEO", "NEU", "XX"), ("TSI", "HAP", "LO"), ("WSI", "SAD", "MD"),
           ("ITH", "FEA", "XX"), ("MTI", "DIS", "HI"))


def _plan_cremad(root, speakers, per_speaker, rng):
    from bench.data.sources.cremad import EMOTION_CODES, SENTENCES, intensity_of

    clips = []
    for n, spk in enumerate(speakers):
        for i in range(per_speaker):
            sentence, code, level = _CREMAD[(n + i) % len(_CREMAD)]
            stem = f"{spk}_{sentence}_{code}_{level}"
            emotion = EMOTION_CODES[code]
            words = SENTENCES[sentence].split()
            clips.append(FakeClip(stem, spk, root / "VideoFlash" / f"{stem}.flv",
                              root / "AudioWAV" / f"{stem}.wav", emotion,
                              intensity_of(emotion, level), words))
    return clips


def _grid_code(words: list[str]) -> str:
    from bench.data.sources import grid

    inverse = [{v: k for k, v in table.items()} for table in
               (grid.COMMANDS, grid.COLOURS, grid.PREPOSITIONS)]
    digit = {v: k for k, v in grid.DIGITS.items()}[words[4]]
    adverb = {v: k for k, v in grid.ADVERBS.items()}[words[5]]
    return "".join(inv[w] for inv, w in zip(inverse, words[:3])) + words[3] + digit + adverb


def _plan_grid(root, speakers, per_speaker, rng):
    """Speaker 1: audio_25k/ + alignments/; speaker 2: s<k>_50kHz/ without alignments; s21:
    audio only (no video, as in the corpus)."""
    clips = []
    for n, spk in enumerate(speakers):
        for i in range(per_speaker):
            words = _sentence(rng)
            code = _grid_code(words)
            if n % 2 == 0:
                audio = root / "audio_25k" / spk / f"{code}.wav"
                align = root / "alignments" / spk / f"{code}.align"
            else:
                audio, align = root / f"{spk}_50kHz" / spk / f"{code}.wav", None
            video = None if spk == "s21" else root / spk / f"{code}.mpg"
            clips.append(FakeClip(f"{spk}_{code}", spk, video, audio, words=words, alignment=align))
    return clips


def _plan_tcdtimit(root, speakers, per_speaker, rng):
    """Second take of each speaker also has a separate wav beside the video."""
    names = ["sa1", "sa2", "si1000", "sx100", "sx200", "si1500"]
    clips = []
    for spk in speakers:
        group = "lipspeakers" if spk.lower().startswith("lipspkr") else "volunteers"
        for i in range(per_speaker):
            utt = names[i % len(names)] if i < len(names) else f"sx{300 + i}"
            video = root / group / spk / "straightcam" / f"{utt}.mp4"
            clips.append(FakeClip(f"{spk}_{utt}", spk, video,
                              video.with_suffix(".wav") if i == 1 else None, words=_sentence(rng)))
    return clips


def _plan_hdtf(root, speakers, per_speaker, rng):
    """The second speaker's clips sit in a sub-folder, as some HDTF downloads do."""
    clips = []
    for n, spk in enumerate(speakers):
        folder = root if n == 0 else root / "clips"
        for i in range(per_speaker):
            stem = f"{spk}_{i:03d}"
            clips.append(FakeClip(stem, spk, folder / f"{stem}.mp4", words=_sentence(rng)))
    return clips


def _plan_voxceleb2(root, speakers, per_speaker, rng):
    alphabet = np.array(list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"))
    clips = []
    for spk in speakers:
        video_id = "".join(rng.choice(alphabet, 11))  # YouTube ids: 11 characters
        for i in range(per_speaker):
            clip = f"{i + 1:05d}"
            clips.append(FakeClip(f"{spk}_{video_id}_{clip}", spk, root / "mp4" / spk / video_id /
                              f"{clip}.mp4", words=_sentence(rng)))
    return clips


def _plan_person(root, speakers, per_speaker, rng):
    """One long video per person, `clips_per_speaker` sentences long."""
    return [FakeClip(spk, spk, root / f"{spk}.mp4",
                 words=sum((_sentence(rng) for _ in range(per_speaker)), [])) for spk in speakers]


_PLANS = {"mead": _plan_mead, "cremad": _plan_cremad, "grid": _plan_grid,
          "tcdtimit": _plan_tcdtimit, "hdtf": _plan_hdtf, "voxceleb2": _plan_voxceleb2,
          "person_specific": _plan_person}
