"""Build and load the synthtalk corpus: 12 speakers, GRID-like sentences, MEAD's 8 emotions.

Layout under the corpus folder (default `$TALKBENCH_HOME/synthtalk/v{VERSION}-{size}-seed{seed}-code{fingerprint}`):

    clips/<clip_id>.npz   audio, landmarks, landmarks3d, pose, aus, motion, identity3d, phonemes...
    index.json            written last: version, seed, size, speakers (voice, appearance), clips
                          (id, speaker, emotion, intensity, text, num_frames, fps, sha256)

Frames are not stored: `load_clips` gives each Clip a loader that renders them on demand.
Every random choice comes from a generator seeded by (seed, speaker, clip), so a clip's bytes
depend on nothing else: the same seed gives byte-identical files, and an interrupted build
resumes by generating only the clips whose file is missing.
"""

from __future__ import annotations

import io
import json
import logging
import zipfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from core.constants import EMOTIONS, SAMPLE_RATE
from core.hashing import code_fingerprint, file_sha256
from core.io import atomic_write_bytes

from core.types import Clip
from bench.data.synthtalk import face, render, speech

log = logging.getLogger(__name__)

VERSION = 1
FPS = face.FPS
FRAME_SIZE = (face.FRAME_SIZE, face.FRAME_SIZE)
SIZES = {"small": 8, "medium": 40, "large": 200}  # clips per speaker
INDEX = "index.json"


@dataclass(frozen=True)
class Speaker:
    """A speaker's voice: espeak-ng voice (language + variant), pitch / range (0-100), rate (wpm)."""

    id: str
    voice: str
    sex: str
    pitch: int
    pitch_range: int
    rate: int


VOICES: tuple[Speaker, ...] = (
    Speaker("spk01", "en-us+m1", "m", 42, 45, 135),
    Speaker("spk02", "en-us+f2", "f", 58, 55, 130),
    Speaker("spk03", "en+m3", "m", 38, 40, 140),
    Speaker("spk04", "en-gb-x-rp+f3", "f", 62, 60, 125),
    Speaker("spk05", "en-us-nyc+m4", "m", 46, 50, 145),
    Speaker("spk06", "en-us+f4", "f", 55, 65, 135),
    Speaker("spk07", "en-gb-scotland+m2", "m", 40, 45, 130),
    Speaker("spk08", "en-029+f1", "f", 60, 50, 140),
    Speaker("spk09", "en-us+m7", "m", 35, 35, 125),
    Speaker("spk10", "en+f5", "f", 65, 55, 135),
    Speaker("spk11", "en-us+m5", "m", 50, 60, 145),
    Speaker("spk12", "en-gb-x-rp+f2", "f", 57, 45, 130),
)
SPEAKERS: tuple[str, ...] = tuple(s.id for s in VOICES)

# How an emotion changes the voice at intensity 3: pitch and range offsets (espeak's 0-100
# scales), rate and loudness factors. Lower intensities scale the change down.
EMOTION_VOICE: dict[str, tuple[float, float, float, float]] = {
    "neutral": (0, 0, 1.0, 1.0),
    "angry": (4, 20, 1.08, 1.35),
    "contempt": (-4, -10, 0.94, 0.95),
    "disgusted": (-6, -5, 0.9, 0.95),
    "fear": (12, 10, 1.12, 0.9),
    "happy": (8, 25, 1.05, 1.15),
    "sad": (-8, -25, 0.85, 0.75),
    "surprised": (12, 30, 1.0, 1.2),
}


# ----------------------------------------------------------------------------- speakers and clips

def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng([seed, *key])


def speaker_identity(seed: int, number: int) -> tuple[face.Identity, render.Appearance]:
    """The face and colours of speaker `number` (1-based), from their own seeded stream."""
    rng = _rng(seed, 0, number)
    identity = face.sample_identity(rng, VOICES[number - 1].sex)
    return identity, render.sample_appearance(rng)


def _voice_for(spk: Speaker, emotion: str, intensity: int) -> dict:
    d_pitch, d_range, rate_k, volume_k = EMOTION_VOICE[emotion]
    k = face.INTENSITY_SCALE[intensity]
    return dict(voice=spk.voice,
                pitch=int(round(np.clip(spk.pitch + k * d_pitch, 0, 99))),
                pitch_range=int(round(np.clip(spk.pitch_range + k * d_range, 0, 99))),
                rate=int(round(spk.rate * (1 + k * (rate_k - 1)))),
                volume=int(round(100 * (1 + k * (volume_k - 1)))))


def _clip_labels(seed: int, number: int, index: int):
    """The clip's generator after drawing its labels: (rng, emotion, intensity, shown, spoken)."""
    # Emotions are balanced: each run of 8 clips of a speaker has each emotion once.
    order = _rng(seed, 2, number, index // len(EMOTIONS)).permutation(len(EMOTIONS))
    emotion = EMOTIONS[order[index % len(EMOTIONS)]]
    rng = _rng(seed, 1, number, index)
    intensity = 1 if emotion == "neutral" else int(rng.integers(1, 4))  # as in MEAD
    shown, spoken = speech.grid_sentence(rng)
    return rng, emotion, intensity, shown, spoken


def _entry(number: int, index: int, emotion: str, intensity: int, text: str, num_frames: int
           ) -> dict:
    spk = VOICES[number - 1]
    return dict(id=f"{spk.id}_{index:03d}", speaker=spk.id, emotion=emotion, intensity=intensity,
                text=text, num_frames=num_frames, fps=FPS,
                voice=_voice_for(spk, emotion, intensity))


def make_clip(seed: int, number: int, index: int, identity: face.Identity) -> tuple[dict, dict]:
    """One clip of speaker `number`: (arrays for its npz, its index entry)."""
    rng, emotion, intensity, shown, spoken = _clip_labels(seed, number, index)
    voice = _voice_for(VOICES[number - 1], emotion, intensity)
    said = speech.synthesize(shown, spoken=spoken, **voice)
    audio, num_frames = face.align_audio(said.audio, FPS)
    track = face.animate(said.phonemes, audio, identity, emotion, intensity, rng)
    arrays = dict(
        audio=audio, landmarks=track.landmarks, landmarks3d=track.landmarks3d, pose=track.pose,
        aus=track.aus, motion=track.motion, identity3d=identity.shape.astype(np.float32),
        au_names=np.array(track.au_names), motion_names=np.array(track.motion_names),
        phonemes=np.array([p[0] for p in said.phonemes]),
        phoneme_times=np.array([p[1:] for p in said.phonemes], np.float32).reshape(-1, 2),
        words=np.array([w[0] for w in said.words]),
        word_times=np.array([w[1:] for w in said.words], np.float32).reshape(-1, 2),
        provenance=np.array([VERSION, seed, number, index], np.int64),  # what made this file
    )
    return arrays, _entry(number, index, emotion, intensity, said.text, num_frames)


# ----------------------------------------------------------------------------- files

def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """An .npz (readable by np.load) with fixed zip timestamps, written atomically.

    np.savez stamps each member with the current time, so its bytes change from run to run.
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)
            zf.writestr(info, member.getvalue())
    atomic_write_bytes(path, buffer.getvalue())


def clips_per_speaker(size: str | int) -> int:
    if isinstance(size, str) and size in SIZES:
        return SIZES[size]
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool) and size > 0:
        return int(size)
    raise ValueError(f"size must be one of {sorted(SIZES)} or a positive int, got {size!r}")


def default_root(size: str | int = "small", seed: int = 0) -> Path:
    from core.paths import talkbench_home

    return talkbench_home() / "synthtalk" / f"v{VERSION}-{size}-seed{seed}-code{generator_code()[:12]}"


def generator_code() -> str:
    """Fingerprint of the generator's code (this package and the constants it uses): an edited
    renderer or speech synthesis builds a new corpus instead of reusing the old one."""
    return code_fingerprint(__name__, packages=("bench.data.synthtalk", "core.constants"))


def _index_is_complete(root: Path, seed: int, per_speaker: int) -> bool:
    try:
        index = json.loads((root / INDEX).read_text())
    except (OSError, ValueError):
        return False
    return (index.get("version") == VERSION and index.get("seed") == seed
            and index.get("clips_per_speaker") == per_speaker
            and len(index.get("clips", [])) == per_speaker * len(VOICES)
            and all((root / c["file"]).is_file() for c in index["clips"]))


# ----------------------------------------------------------------------------- build and load

def build(root: Path | None = None, size: str | int = "small", seed: int = 0,
          progress: bool = True) -> Path:
    """Build (or finish building) the corpus and return its folder.

    A folder whose index is complete is returned at once; otherwise only clips whose file is
    missing are generated, and the index is written last.
    """
    per_speaker = clips_per_speaker(size)
    root = Path(root) if root is not None else default_root(size, seed)
    if _index_is_complete(root, seed, per_speaker):
        return root
    (root / "clips").mkdir(parents=True, exist_ok=True)
    jobs = [(n, i) for n in range(1, len(VOICES) + 1) for i in range(per_speaker)]
    bar = _progress(len(jobs), progress)
    speakers, clips, made = {}, [], 0
    for number in range(1, len(VOICES) + 1):
        identity, look = speaker_identity(seed, number)
        spk = VOICES[number - 1]
        speakers[spk.id] = dict(voice=spk.voice, sex=spk.sex, pitch=spk.pitch,
                                pitch_range=spk.pitch_range, rate=spk.rate,
                                appearance=look.to_dict())
        for index in range(per_speaker):
            path = root / "clips" / f"{spk.id}_{index:03d}.npz"
            entry = _existing_entry(path, seed, number, index)
            if entry is None:  # generate (also the metadata: it comes from the same draw)
                arrays, entry = make_clip(seed, number, index, identity)
                _write_npz(path, arrays)
                made += 1
            entry.update(file=f"clips/{path.name}", sha256=file_sha256(path))
            clips.append(entry)
            bar.update(1)
    bar.close()
    index = dict(corpus="synthtalk", version=VERSION, seed=seed, size=size,
                 clips_per_speaker=per_speaker, fps=FPS, sample_rate=SAMPLE_RATE,
                 frame_size=list(FRAME_SIZE), au_names=list(face.AU_NAMES),
                 motion_names=list(face.MOTION_NAMES), speakers=speakers, clips=clips)
    atomic_write_bytes(root / INDEX, json.dumps(index, indent=1).encode())
    log.info("synthtalk: %d clips (%d generated) in %s", len(clips), made, root)
    return root


def _existing_entry(path: Path, seed: int, number: int, index: int) -> dict | None:
    """Index entry of a clip file left by an earlier, interrupted build (None if absent)."""
    if not path.is_file():
        return None
    try:
        with np.load(path) as data:
            made_by = data["provenance"].tolist()
            num_frames = int(data["landmarks"].shape[0])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None  # unreadable: make it again
    if made_by != [VERSION, seed, number, index]:  # left by another corpus version or seed
        return None
    _, emotion, intensity, shown, _ = _clip_labels(seed, number, index)
    return _entry(number, index, emotion, intensity, " ".join(shown), num_frames)


def _progress(total: int, enabled: bool):
    if enabled:
        try:
            from tqdm import tqdm

            return tqdm(total=total, desc="synthtalk", unit="clip")
        except ImportError:  # progress is a nicety, not a requirement
            pass

    class _Silent:
        def update(self, n):
            pass

        def close(self):
            pass

    return _Silent()


def load_clips(root: Path | None = None, speakers: list[str] | None = None) -> list[Clip]:
    """The corpus's clips (building the default corpus when `root` is None), in index order.

    Frames are rendered from the landmarks when first asked for (`clip.frames`).
    """
    root = Path(root) if root is not None else build()
    index = json.loads((root / INDEX).read_text())
    if index.get("version") != VERSION:
        raise ValueError(f"{root} holds synthtalk v{index.get('version')}, this is v{VERSION}")
    clips = []
    for entry in index["clips"]:
        if speakers is not None and entry["speaker"] not in speakers:
            continue
        with np.load(root / entry["file"]) as data:
            arrays = {k: data[k] for k in data.files}
        look = index["speakers"][entry["speaker"]]["appearance"]
        clips.append(Clip(
            id=entry["id"], speaker=entry["speaker"], audio=arrays["audio"],
            landmarks=arrays["landmarks"], fps=float(entry["fps"]), sample_rate=SAMPLE_RATE,
            emotion=entry["emotion"], intensity=int(entry["intensity"]), text=entry["text"],
            landmarks3d=arrays["landmarks3d"], pose=arrays["pose"], aus=arrays["aus"],
            au_names=tuple(str(a) for a in arrays["au_names"]), motion=arrays["motion"],
            meta=dict(corpus="synthtalk", corpus_version=VERSION, seed=index["seed"],
                      frame_size=FRAME_SIZE, appearance=look,
                      motion_names=[str(m) for m in arrays["motion_names"]],
                      voice=entry["voice"],
                      phonemes=[(str(n), float(a), float(b)) for n, (a, b) in
                                zip(arrays["phonemes"], arrays["phoneme_times"])],
                      words=[(str(w), float(a), float(b)) for w, (a, b) in
                             zip(arrays["words"], arrays["word_times"])]),
            frames_loader=partial(render.render_frames, arrays["landmarks"], look, FRAME_SIZE[0]),
        ))
    return clips
