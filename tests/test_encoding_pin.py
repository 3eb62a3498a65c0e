"""A protocol's pinned encoding (`encode:`): `run` writes and scores videos in the pin, `score`
records what it was given, counts what differs and, with `--reencode`, re-encodes it first."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from bench.cli import main
from bench.data.clips import load_splits
from bench.data.fake_trees import build_fake_tree
from bench.data.video import Encoding, probe, read_video, write_encoded
from bench.protocol import ProtocolError, load_protocol, parse_protocol
from bench.runner import run
from core.paths import talkbench_home
from core.types import ClipPair
from metrics import build_metric

PIN = {"video_codec": "h264", "crf": 23, "pix_fmt": "yuv420p", "audio_codec": "aac", "sample_rate": 16000}
OTHER = Encoding.from_dict({"video_codec": "mpeg4", "bitrate": 400_000, "audio_codec": "mp2"})


@pytest.fixture(scope="module")
def pinned(tmp_path_factory):
    """A fake HDTF tree (one test speaker, two clips) under fd2talk_t1_hdtf's preprocessing with a pin."""
    tmp = tmp_path_factory.mktemp("pin")
    tree = build_fake_tree("hdtf", tmp / "root", speakers=["WRA_KellyAyotte", "RD_Radio34"],
                           clips_per_speaker=2, seconds=1.2)
    raw = load_protocol("fd2talk_t1_hdtf").raw
    raw["id"] = "fake_hdtf_pinned"
    raw["preprocessing"].update(landmark_backend="dlib", landmark_params={}, pose_backend="pnp")
    raw["preprocessing"]["crop_params"] = {**raw["preprocessing"].get("crop_params", {}), "detect_size": 360}
    raw["metrics"] = [{"name": "PSNR", "params": {"data_range": 255}}, "F-LD"]
    raw["methods"] = ["static"]
    raw["reference_results"] = []
    raw["split"] = {"rule": "explicit", "train": ["RD_Radio34"], "val": [], "test": ["WRA_KellyAyotte"]}
    raw["windowing"] = {"mode": "whole"}
    raw["encode"] = PIN
    path = tmp / "fake_hdtf_pinned.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    out = run(str(path), out_root=tmp / "results", progress=False, data_root=tree.root)
    test = load_splits(load_protocol(path), progress=False, root=tree.root)["test"]
    return path, tree, out, test, tmp


def _score(path, tree, tmp, folder, name, *extra):
    assert main(["score", str(path), "--predictions", str(folder), "--name", name, "--root", str(tree.root),
                 "--results", str(tmp / "results"), "--quiet", *extra]) == 0
    return json.loads((tmp / "results" / "fake_hdtf_pinned" / f"{name}.json").read_text())


def test_run_writes_and_scores_the_pinned_encoding(pinned):
    path, tree, out, test, tmp = pinned
    result = json.loads((out / "static.json").read_text())
    enc = result["encoding"]
    assert enc["pin"] == Encoding.from_dict(PIN).to_dict()
    assert enc["clips"] == len(test) == 2 and enc["as_pinned"] == 2 and not enc["differing"]
    assert enc["seen"] == {"h264 yuv420p + aac 16000 Hz": 2}
    # scored on the decoded video, not on the lossless frames of the .npz beside it
    pred_dir = talkbench_home() / result["provenance"]["predictions"]
    psnr = build_metric("PSNR", {"data_range": 255})
    lossless, decoded = [], []
    for clip in test:
        exact = np.load(pred_dir / f"{clip.id}.npz")["frames"]
        video = read_video(pred_dir / f"{clip.id}.mp4").frames
        assert not np.array_equal(exact, video)
        lossless.append(psnr.clip_value(ClipPair(clip.id, {"frames": exact}, {"frames": clip.frames})))
        decoded.append(psnr.clip_value(ClipPair(clip.id, {"frames": video}, {"frames": clip.frames})))
    assert result["metrics"]["PSNR"]["value"] == pytest.approx(np.mean(decoded), rel=1e-6)
    assert np.mean(decoded) != pytest.approx(np.mean(lossless), rel=1e-6)
    text = (out / "README.md").read_text()
    assert "### Prediction encoding" in text and "| static " in text.split("### Prediction encoding")[1]


def test_score_counts_and_reencodes_another_encoding(pinned):
    path, tree, out, test, tmp = pinned
    folder = tmp / "mpeg4"
    for clip in test:
        write_encoded(folder / f"{clip.id}.mp4", clip.frames, clip.fps, clip.audio, clip.sample_rate, OTHER)
        assert probe(folder / f"{clip.id}.mp4").video_codec == "mpeg4"
    as_given = _score(path, tree, tmp, folder, "gt_mpeg4")
    enc = as_given["encoding"]
    assert enc["as_pinned"] == 0 and sorted(enc["differing"]) == sorted(c.id for c in test)
    assert all(any("mpeg4" in d for d in diffs) for diffs in enc["differing"].values())
    assert enc["reencoded"] == [] and enc["seen"] == {"mpeg4 yuv420p + mp3 16000 Hz": 2}
    again = _score(path, tree, tmp, folder, "gt_mpeg4_reencoded", "--reencode")
    assert again["encoding"]["reencoded"] == sorted(c.id for c in test)
    # one more lossy generation: the frames moved, and further from the ground truth
    assert again["metrics"]["PSNR"]["value"] < as_given["metrics"]["PSNR"]["value"]
    # lossless .npz frames with no video are not in any encoding
    npz = tmp / "npz"
    npz.mkdir()
    for clip in test:
        np.savez(npz / f"{clip.id}.npz", frames=clip.frames)
    lossless = _score(path, tree, tmp, npz, "gt_npz")
    assert lossless["encoding"]["seen"] == {"lossless .npz frames": 2}
    assert lossless["metrics"]["PSNR"]["value"] == pytest.approx(100.0)  # exact frames, as given


@pytest.mark.parametrize("bad, message", [
    ({"crf": 70}, "crf must be an integer"), ({"video_codec": "nonesuch"}, "no encoder"),
    ({"speed": 1}, "unknown key"), ({"crf": 18, "bitrate": 1000}, "crf or bitrate"), ("h264", "mapping"),
])
def test_a_malformed_pin_is_a_protocol_error(bad, message):
    raw = load_protocol("synthtalk").raw
    raw["encode"] = bad
    with pytest.raises(ProtocolError, match=message):
        parse_protocol(raw)
