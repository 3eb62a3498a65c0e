"""`talkbench perf lse|fid|landmarks|score` (bench/perf.py) and LSE's `frame_path: jpeg_roundtrip`
(metrics/syncnet/jpeg.py): the two sides of each comparison agree on a short synthtalk clip with
random-initialised weights, the JPEG path enters the metric identity and moves LSE-D a little."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench import perf
from bench.calibrate import random_syncnet
from core.types import Clip, ClipPair
from metrics import build_metric
from metrics import syncnet as sn

pytestmark = pytest.mark.usefixtures("one_thread")

FRAMES = 16


@pytest.fixture(scope="module")
def clip() -> Clip:
    """The first synthtalk clip of speaker 1, cut to FRAMES frames (rendered here, no corpus build)."""
    from bench.data.synthtalk import corpus, render

    identity, look = corpus.speaker_identity(0, 1)
    arrays, entry = corpus.make_clip(0, 1, 0, identity)
    frames = render.render_frames(arrays["landmarks"][:FRAMES], look, 256)
    return Clip(entry["id"], entry["speaker"], arrays["audio"][:FRAMES * 640],
                arrays["landmarks"][:FRAMES], frames_loader=lambda: frames)


@pytest.fixture(scope="module")
def syncnet_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("syncnet") / "syncnet_v2.model"
    random_syncnet(path)
    return path


def test_lse_talkbench_jpeg_path_agrees_with_the_reference_loop(clip, tmp_path, monkeypatch):
    monkeypatch.setenv("TALKBENCH_WEIGHTS_SYNCNET_V2", str(tmp_path / "absent"))
    report = perf.perf_lse([clip], tmp_path, random_init=True, repeat=1)
    rows = {r.stage.split(" ", 1)[1]: r for r in report.rows if r.stage.startswith(clip.id)}
    jpeg_d, direct_d = rows["LSE-D (jpeg_roundtrip)"], rows["LSE-D (direct)"]
    assert report.disagreements == []
    assert jpeg_d.agrees and rows["LSE-C (jpeg_roundtrip)"].agrees
    assert jpeg_d.diff <= 1e-5 * jpeg_d.reference
    # the direct path skips the JPEG round trip: a small, nonzero difference
    assert 1e-6 < direct_d.diff / direct_d.reference < 0.05
    assert jpeg_d.talkbench_s > 0 and jpeg_d.reference_s > 0 and jpeg_d.ratio > 0
    assert "LSE-D (jpeg_roundtrip)" in perf.format_table(report)


def test_jpeg_roundtrip_enters_the_identity_and_moves_lse_d(clip, syncnet_file):
    params = {"weights_path": str(syncnet_file), "crop": "syncnet"}
    direct = build_metric("LSE-D", params)
    jpeg = build_metric("LSE-D", {**params, "frame_path": "jpeg_roundtrip"})
    assert direct.identity() != jpeg.identity()
    assert jpeg.identity()["params"]["frame_path"] == "jpeg_roundtrip"
    assert set(jpeg.identity()["jpeg"]) == {"libavcodec", "libswscale", "opencv"}
    pair = ClipPair(clip.id, {"frames": clip.frames}, {"landmarks": clip.landmarks}, fps=25.0,
                    audio=clip.audio, sample_rate=16000)
    d0, d1 = direct.clip_value(pair), jpeg.clip_value(pair)  # the LRU result cache keys the path too
    assert d0 != d1 and abs(d1 - d0) / d0 < 0.05
    with pytest.raises(ValueError, match="frame_path.*png"):
        build_metric("LSE-D", {**params, "frame_path": "png"})


def test_jpeg_roundtrip_is_ffmpegs_rate_controlled_mjpeg():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, 48, 64, 3), dtype=np.uint8)
    files = list(sn.encode_jpegs(frames, 25))
    assert len(files) == 3 and all(f[:2] == b"\xff\xd8" for f in files)
    out = sn.jpeg_roundtrip(frames, 25)
    assert out.shape == frames.shape and out.dtype == np.uint8
    assert np.array_equal(out, sn.jpeg_roundtrip(frames, 25))  # deterministic
    assert 0 < np.abs(out[..., ::-1].astype(int) - frames).mean() < 80  # BGR, lossy


def test_fid_features_agree_with_pytorch_fid(clip, tmp_path, monkeypatch):
    monkeypatch.setenv("TALKBENCH_WEIGHTS_PT_INCEPTION", str(tmp_path / "absent"))
    report = perf.perf_fid([clip], tmp_path, random_init=True, frames_per_clip=3)
    assert report.disagreements == []
    features = [r for r in report.rows if r.stage.startswith("features")]
    assert len(features) == 2 and all(r.agrees for r in features)
    assert all(r.talkbench_s > 0 and r.reference_s > 0 for r in features)


def test_cli_landmarks_writes_json(clip, tmp_path, monkeypatch):
    from bench.cli import main

    monkeypatch.setattr(perf, "synthtalk_clips", lambda n: [clip])
    assert main(["perf", "landmarks", "--clips", "1", "--frames", "4", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "landmarks.json").read_text())
    assert data["what"] == "landmarks" and data["machine"]["cores"] >= 1 and "cpu" in data["machine"]
    assert "torch" in data["packages"]
    dlib_row = data["rows"][0]
    assert dlib_row["stage"].startswith("dlib frames/s") and dlib_row["talkbench"] > 0
    import importlib.util

    if importlib.util.find_spec("face_alignment") is None:
        assert any("face-alignment not installed: pip install" in (r["note"] or "") for r in data["rows"])


def test_cli_score_needs_a_protocol_and_worker_counts(capsys):
    from bench.cli import main

    assert main(["perf", "score"]) == 2
    assert "name a protocol" in capsys.readouterr().err
    assert main(["perf", "score", "synthtalk", "--workers", "1,x"]) == 2
    assert main(["perf", "score", "synthtalk", "--workers", "0,2"]) == 2


def test_unknown_frame_path_is_a_protocol_error(tmp_path):
    import yaml

    from bench.protocol import ProtocolError, load_protocol
    from core.paths import repo_root

    raw = yaml.safe_load((repo_root() / "protocols" / "synthtalk.yaml").read_text())
    for entry in raw["metrics"]:
        if isinstance(entry, dict) and entry["name"] == "LSE-D":
            entry["params"]["frame_path"] = "jpg"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ProtocolError, match=r"frame_path: 'jpg' is not one of \['direct', 'jpeg_roundtrip'\]"):
        load_protocol(path)
