"""Real synthesized speech with phoneme and word timings, from espeak-ng through ctypes.

espeak-ng (bundled by the PyPI package `espeakng-loader`) is driven in synchronous mode with
phoneme events switched on: its synth callback hands us 16-bit PCM at the synthesizer's rate
(22050 Hz) together with word events (type 1, carrying the character position of the word in
the input text) and phoneme events (type 7, carrying the phoneme mnemonic packed into the
event's 8-byte `id` field). Each event's `sample` field is its absolute position in the output
at the synthesizer's rate (`audio_position` is the same position rounded to milliseconds).

espeak-ng keeps global state (one voice, one callback, one set of parameters), so every call
goes through one process-wide lock and the library is initialised once per process. It also
carries synthesis state from one utterance to the next (the same sentence synthesized twice in a
row comes out slightly different) and seeds its noise from the clock. For a corpus whose bytes
depend only on its seed, each utterance is therefore synthesized in a forked child of the
process, from the freshly initialised library state, with a fixed noise seed (~15 ms overhead).
"""

from __future__ import annotations

import ctypes
import os
import pickle
import threading
import warnings
from dataclasses import dataclass, field

import numpy as np

from core.constants import SAMPLE_RATE
import soxr

LEAD_S = 0.2  # silence before and after the sentence, so clips start and end with a closed mouth
TAIL_S = 0.2

# speak_lib.h constants.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1
_EVENT_PHONEME = 7
_PARAM_RATE, _PARAM_VOLUME, _PARAM_PITCH, _PARAM_RANGE = 1, 2, 3, 4
_PARAM_WORDGAP = 7


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    """`espeak_EVENT` of speak_lib.h (40 bytes on LP64: six ints, a pointer, an 8-byte union)."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),  # 1-based character position in the input text
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # milliseconds
        ("sample", ctypes.c_int),  # samples at the synthesizer's rate
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                             ctypes.POINTER(_Event))


class EspeakError(RuntimeError):
    """espeak-ng could not be loaded or refused a request."""


class _Espeak:
    """The process-wide espeak-ng instance: library handle, callback and collected output."""

    def __init__(self) -> None:
        import espeakng_loader

        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self._declare()
        # espeak_Initialize wants the folder that *contains* espeak-ng-data.
        data_parent = os.path.dirname(os.path.normpath(espeakng_loader.get_data_path()))
        rate = self.lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_parent.encode(),
                                          _INITIALIZE_PHONEME_EVENTS)
        if rate <= 0:
            raise EspeakError(f"espeak_Initialize failed ({rate}) with data under {data_parent}")
        self.rate = int(rate)
        self._pcm: list[np.ndarray] = []
        self._events: list[tuple[int, int, int, bytes]] = []
        self._callback = _CALLBACK(self._on_synth)  # keep a reference: C holds only the pointer
        self.lib.espeak_SetSynthCallback(self._callback)

    def _declare(self) -> None:
        lib = self.lib
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                     ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synchronize.restype = ctypes.c_int
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_ng_SetRandSeed.restype = None

    def _on_synth(self, wav, num_samples, events) -> int:
        if num_samples > 0:
            self._pcm.append(np.ctypeslib.as_array(wav, (num_samples,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            ev = events[i]
            # The union holds a packed, not necessarily NUL-terminated, name for phoneme events.
            name = bytes(ev.id.string) if ev.type == _EVENT_PHONEME else b""
            self._events.append((ev.type, ev.text_position, ev.sample, name))
            i += 1
        return 0  # 0 = continue synthesis

    def synth(self, text: str, voice: str, rate: int, pitch: int, pitch_range: int, volume: int
              ) -> tuple[np.ndarray, list[tuple[int, int, int, bytes]]]:
        """Raw int16 PCM at `self.rate` and the (type, text_position, sample, name) events."""
        self.lib.espeak_ng_SetRandSeed(_NOISE_SEED)
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise EspeakError(f"unknown espeak-ng voice {voice!r}")
        for param, value in ((_PARAM_RATE, rate), (_PARAM_PITCH, pitch),
                             (_PARAM_RANGE, pitch_range), (_PARAM_VOLUME, volume),
                             (_PARAM_WORDGAP, 0)):
            self.lib.espeak_SetParameter(param, int(value), 0)
        self._pcm, self._events = [], []
        data = text.encode("utf-8") + b"\0"
        err = self.lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        self.lib.espeak_Synchronize()
        if err != 0:
            raise EspeakError(f"espeak_Synth failed ({err}) on {text!r}")
        pcm = np.concatenate(self._pcm) if self._pcm else np.zeros(0, np.int16)
        return pcm, self._events

    def synth_isolated(self, *args) -> tuple[np.ndarray, list[tuple[int, int, int, bytes]]]:
        """`synth` run in a forked child, so this process's library state is never advanced."""
        if not hasattr(os, "fork"):  # no fork (Windows): output then depends on earlier calls
            return self.synth(*args)
        read_fd, write_fd = os.pipe()
        with warnings.catch_warnings():
            # Python >= 3.12 warns about fork() in a process with threads (torch's, say); the
            # child only runs espeak-ng's C code and writes to a pipe, so no lock can bite.
            warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*fork.*")
            pid = os.fork()
        if pid == 0:  # child: synthesize, send the result, leave without running Python cleanup
            status = 0
            try:
                os.close(read_fd)
                try:
                    payload = pickle.dumps(("ok", self.synth(*args)))
                except Exception as exc:  # reported by the parent
                    payload = pickle.dumps(("error", repr(exc)))
                with os.fdopen(write_fd, "wb") as pipe:
                    pipe.write(payload)
            except BaseException:
                status = 1
            finally:
                os._exit(status)
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as pipe:  # read everything before reaping the child
            payload = pipe.read()
        os.waitpid(pid, 0)
        if not payload:
            raise EspeakError("espeak-ng synthesis child died without a result")
        kind, value = pickle.loads(payload)
        if kind != "ok":
            raise EspeakError(value)
        return value


_NOISE_SEED = 20240601  # espeak-ng otherwise seeds its noise generator from the clock
_lock = threading.Lock()
_engine: _Espeak | None = None


def _espeak() -> _Espeak:
    global _engine
    if _engine is None:
        _engine = _Espeak()
    return _engine


@dataclass
class Speech:
    """Mono float32 audio at 16 kHz with phoneme and word intervals in seconds.

    Phoneme names are espeak-ng's ASCII mnemonics, stress marks included ("'aU", "b", "_:");
    names starting with "_" are pauses. Times include the silent lead-in.
    """

    audio: np.ndarray
    phonemes: list[tuple[str, float, float]]
    words: list[tuple[str, float, float]]
    text: str = ""
    sample_rate: int = SAMPLE_RATE
    voice: str = ""
    params: dict = field(default_factory=dict)

    @property
    def duration(self) -> float:
        return len(self.audio) / self.sample_rate


def synthesize(words: list[str] | str, voice: str = "en-us", rate: int = 160, pitch: int = 50,
               pitch_range: int = 50, volume: int = 100, spoken: list[str] | None = None,
               lead_s: float = LEAD_S, tail_s: float = TAIL_S) -> Speech:
    """Synthesize one sentence.

    `words` is the sentence (a string or its words); `spoken`, when given, is what espeak reads
    for each word (e.g. "ef" for the letter "f"), so word timings still name the written words.
    `rate` is in words per minute, `pitch` and `pitch_range` are espeak's 0-100 scales and
    `volume` its amplitude in percent.
    """
    shown = words.split() if isinstance(words, str) else list(words)
    said = list(spoken) if spoken is not None else shown
    if len(said) != len(shown):
        raise ValueError("`spoken` must have one entry per word")
    text = " ".join(said)
    with _lock:
        engine = _espeak()
        pcm, events = engine.synth_isolated(text, voice, rate, pitch, pitch_range, volume)
        synth_rate = engine.rate
    if pcm.size == 0:
        raise EspeakError(f"espeak-ng produced no audio for {text!r}")

    audio = soxr.resample(pcm.astype(np.float32) / 32768.0, synth_rate, SAMPLE_RATE, quality="HQ")
    lead = np.zeros(int(round(lead_s * SAMPLE_RATE)), np.float32)
    tail = np.zeros(int(round(tail_s * SAMPLE_RATE)), np.float32)
    audio = np.concatenate([lead, audio.astype(np.float32), tail])
    speech_end = lead_s + len(pcm) / synth_rate

    phonemes = _phoneme_intervals(events, synth_rate, lead_s, speech_end)
    word_list = _word_intervals(events, said, shown, synth_rate, lead_s, phonemes)
    return Speech(audio=audio, phonemes=phonemes, words=word_list, text=" ".join(shown),
                  voice=voice, params=dict(rate=rate, pitch=pitch, pitch_range=pitch_range,
                                           volume=volume))


def _phoneme_intervals(events, synth_rate: int, offset: float, end: float
                       ) -> list[tuple[str, float, float]]:
    """Phoneme events -> (name, start, end); each phoneme ends where the next one starts."""
    starts = [(name.split(b"\0")[0].decode("ascii", "replace"), offset + sample / synth_rate)
              for kind, _, sample, name in events if kind == _EVENT_PHONEME]
    out = []
    for i, (name, start) in enumerate(starts):
        stop = starts[i + 1][1] if i + 1 < len(starts) else end
        stop = min(max(stop, start), end)
        if name and stop > start:  # zero-length events carry no sound
            out.append((name, start, stop))
    return out


def _word_intervals(events, said: list[str], shown: list[str], synth_rate: int, offset: float,
                    phonemes: list[tuple[str, float, float]]) -> list[tuple[str, float, float]]:
    """Word events -> (written word, start, end), the end being that of its last sounding phoneme."""
    # Character span of each spoken word in the synthesized text (text_position is 1-based).
    spans, pos = [], 0
    for word in said:
        spans.append((pos, pos + len(word)))
        pos += len(word) + 1
    starts: dict[int, float] = {}
    for kind, text_pos, sample, _ in events:
        if kind != _EVENT_WORD:
            continue
        for idx, (a, b) in enumerate(spans):
            if a <= text_pos - 1 < b and idx not in starts:
                starts[idx] = offset + sample / synth_rate
    order = sorted(starts)
    out = []
    for k, idx in enumerate(order):
        start = starts[idx]
        nxt = starts[order[k + 1]] if k + 1 < len(order) else float("inf")
        sounding = [e for name, s, e in phonemes if start <= s < nxt and not name.startswith("_")]
        out.append((shown[idx], start, max(sounding) if sounding else start))
    return out


# A GRID-like grammar (command, colour, preposition, letter, digit, adverb).
GRID_GRAMMAR: dict[str, tuple[str, ...]] = {
    "command": ("bin", "lay", "place", "set"),
    "colour": ("blue", "green", "red", "white"),
    "preposition": ("at", "by", "in", "with"),
    "letter": tuple("abcdefghijklmnopqrstuvxyz"),  # GRID leaves out "w"
    "digit": ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"),
    "adverb": ("again", "now", "please", "soon"),
}
# How each letter is read aloud: a lone "a" would otherwise be read as the article.
LETTER_NAMES = dict(a="ay", b="bee", c="see", d="dee", e="ee", f="ef", g="gee", h="aitch",
                    i="eye", j="jay", k="kay", l="el", m="em", n="en", o="oh", p="pee", q="cue",
                    r="ar", s="ess", t="tee", u="you", v="vee", x="ex", y="why", z="zee")


def grid_sentence(rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """One GRID-like sentence: (written words, spoken words), e.g. "bin blue at f two now"."""
    shown = [str(rng.choice(options)) for options in GRID_GRAMMAR.values()]
    spoken = [LETTER_NAMES.get(w, w) if slot == "letter" else w
              for slot, w in zip(GRID_GRAMMAR, shown)]
    return shown, spoken
