"""End to end on every real-dataset layout: fake tree -> `data check` -> `data prepare` -> `run`.

Each case writes a small tree in the dataset's distributed layout (real H.264/AAC mp4, m4a, flv,
mpg, wav files from synthtalk renders) with the three defects the issue names -- a truncated
video, a clip with no face, a missing audio file -- and runs it under a protocol derived from the
paper protocol for that dataset: the paper's preprocessing (fps, crop recipe, resolution,
windowing) is kept; the detector becomes dlib and the head pose pnp (FAN / Hopenet weights are
downloads, not available offline), the split names the fake speakers, and the metric list is cut
to what runs offline in seconds. The checks: `check` finds every item and names the broken ones,
`prepare` fails exactly the defective items with the right reasons, and `run` scores the
remaining test-split clips and reports the failures.

The person-specific case also runs an ordinary 16:9 video (the face off centre in a 640 x 360
frame) through the shipped NeRF protocols' preprocessing unchanged: it prepares, a video with no
face is still rejected with `no_face`, and `crop: none` refuses to stretch it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from bench.cli import main
from bench.data.check import check
from bench.data.fake_trees import WIDE_PERSON, build_fake_tree
from bench.data.prepare import prepare_protocol
from bench.data.clips import load_splits
from bench.protocol import load_protocol
from bench.runner import run

# dataset -> the paper protocol whose preprocessing the fake run uses
CASES = {
    "mead": "kfusion_t1_mead",
    "cremad": "kfusion_t1_cremad",
    "grid": "tcsan_t3_grid",
    "tcdtimit": "tcsan_t3_tcdtimit",
    "hdtf": "fd2talk_t1_hdtf",
    "voxceleb2": "fd2talk_t1_voxceleb",
    "person_specific": "gnerf_t1_test_a",
}
DEFECTS = ("truncated", "no_face", "missing_audio")
# the reason `prepare` gives for each defect; a missing audio *stream* inside a video (layouts
# without separate audio files) is reported as no_audio; MPEG-PS (GRID's .mpg) writes no
# trustworthy duration, so a cut .mpg shows as video shorter than its separate audio
REASONS = {"truncated": {"truncated", "unreadable", "av_duration_mismatch"}, "no_face": {"no_face"},
           "missing_audio": {"missing_audio", "no_audio"}}


def _fake_protocol(dataset: str, paper_id: str, tree, path):
    raw = load_protocol(paper_id).raw  # resolved: bases and split files merged in
    raw["id"] = f"fake_{dataset}"
    raw["preprocessing"].update(landmark_backend="dlib", landmark_params={}, pose_backend="pnp")
    if raw["preprocessing"].get("crop") in ("landmark_box", "syncnet", "face_square_static"):
        raw["preprocessing"]["crop_params"] = {**raw["preprocessing"].get("crop_params", {}),
                                               "detect_size": 360}
    raw["metrics"] = ["M-LD", "F-LD", {"name": "PSNR", "params": {"data_range": 255}}]
    raw["methods"] = ["static"]
    raw["reference_results"] = []
    if dataset == "person_specific":
        raw["split"] = {"rule": "time", "test_fraction": 0.4}
        raw["dataset"]["options"] = {}
    else:
        raw["split"] = {"rule": "explicit", "train": [s for s in tree.speakers if s != _test_speaker(tree)],
                        "val": [], "test": [_test_speaker(tree)]}
    if raw.get("windowing", {}).get("mode") == "fixed":
        # person-specific: the 2.4 s videos' 0.96 s test part gives two 0.4 s windows
        seconds = 0.4 if dataset == "person_specific" else 1.0
        raw["windowing"] = {**raw["windowing"], "seconds": seconds, "hop": seconds}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_protocol(path)


def _test_speaker(tree) -> str:
    """The speaker the defects hit least, so the test split keeps a clip to score."""
    hits = {s: 0 for s in tree.speakers}
    for item_id in tree.affected.values():
        hits[tree.clip(item_id).speaker] += 1
    return min(sorted(hits), key=hits.get)


@pytest.mark.parametrize("dataset", sorted(CASES))
def test_fake_tree_check_prepare_run(dataset, tmp_path):
    speakers = {"mead": ["M003", "M005", "W009"], "cremad": ["1001", "1002", "1003"],
                "grid": ["s1", "s2", "s3"], "tcdtimit": ["01M", "02M", "03F"],
                "hdtf": ["WRA_KellyAyotte", "RD_Radio34", "WDA_BarackObama"],
                "voxceleb2": ["id00017", "id00061", "id00081"],
                "person_specific": ["obama", "may", "shaheen", "macron"]}[dataset]
    tree = build_fake_tree(dataset, tmp_path / "root", speakers=speakers, clips_per_speaker=2,
                           seconds=1.2, defects=DEFECTS)
    protocol = _fake_protocol(dataset, CASES[dataset], tree, tmp_path / f"fake_{dataset}.yaml")

    report = check(protocol, tree.root)
    assert sorted(c.item.id for c in report.items) == tree.ids
    assert not report.ok
    assert main(["data", "check", str(protocol.path), "--root", str(tree.root)]) == 1  # defects

    prepared = prepare_protocol(protocol, tree.root, progress=False)
    manifest = prepared.manifest
    assert manifest["items"] == len(tree.ids)
    reasons = {item_id: reason for reason, ids in manifest["failed"].items() for item_id in ids}
    for defect, item_id in tree.affected.items():
        assert reasons.get(item_id) in REASONS[defect], (defect, item_id, manifest["failed"])
    broken = set(tree.affected.values())
    assert manifest["ok"] == len(set(tree.ids) - broken)
    for entry_id, entry in manifest["entries"].items():
        if entry["status"] != "ok":
            assert entry.get("detail") or entry.get("reason"), entry_id

    splits = load_splits(protocol, progress=False, root=tree.root)
    if dataset == "person_specific":
        assert splits["train"] and splits["test"]
        assert {c.speaker for c in splits["test"]} <= {c.speaker for c in splits["train"]}
        # the test part is scored in windows (N > 1), training sees the whole train part
        assert len(splits["test"]) == 2 * len(splits["train"])
        assert all(c.id.endswith("_train") for c in splits["train"])
    else:
        test_speaker = _test_speaker(tree)
        assert {c.speaker for c in splits["test"]} <= {test_speaker}
        assert test_speaker not in {c.speaker for c in splits["train"]}
    assert all(c.fps == protocol.fps for s in splits.values() for c in s)

    out = run(str(protocol.path), device="cpu", out_root=tmp_path / "results", progress=False,
              data_root=tree.root)
    result = json.loads((out / "static.json").read_text())
    assert result["clips"] == len(splits["test"]) > 0
    assert result["metrics"]["M-LD"]["n"] == len(splits["test"])
    data = json.loads((out / "_data_preparation.json").read_text())
    assert data["failed"] == manifest["failed"]
    text = (out / "README.md").read_text()
    assert "Data preparation" in text
    for item_id in broken:
        assert item_id in text


def test_missing_landmark_model_is_one_clear_error_before_any_item(tmp_path):
    """The paper protocol as shipped names FAN; without its weights (or package) prepare stops at
    once with the fix, instead of failing every item with the same traceback."""
    tree = build_fake_tree("mead", tmp_path / "root", speakers=["M003", "M037"], clips_per_speaker=1)
    protocol = load_protocol("kfusion_t1_mead")
    with pytest.raises(ValueError, match="landmark_backend 'fan' is unavailable") as err:
        prepare_protocol(protocol, tree.root, progress=False)
    assert "talkbench weights download fan_2d" in str(err.value) or "pip install" in str(err.value)
    assert main(["data", "prepare", "kfusion_t1_mead", "--root", str(tree.root), "--quiet"]) == 2


def _wide_protocol(tmp_path, **pre):
    """gnerf_t1_test_a as shipped, on every video under the root, with the split and windows
    scaled to 2.4 s videos (0.96 s test part, two 0.4 s windows); `pre` overrides preprocessing."""
    shipped = [load_protocol(name) for name in ("gnerf_t1_test_a", "gnerf_t1_test_b", "gnerf_t3_test_a")]
    assert all(p.preprocessing == shipped[0].preprocessing for p in shipped)
    raw = shipped[0].raw
    raw.update(id="wide_person", reference_results=[], methods=["ground_truth", "static"],
               metrics=[{"name": "LMD", "params": {"region": "mouth", "normalize": "none"}},
                        {"name": "PSNR", "params": {"data_range": 255}}])
    raw["dataset"]["options"] = {}
    raw["split"] = {"rule": "time", "test_fraction": 0.4}
    raw["windowing"] = {**raw["windowing"], "seconds": 0.4, "hop": 0.4}
    raw["preprocessing"].update(pre)
    path = tmp_path / f"wide_person{len(pre)}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_protocol(path), shipped[0]


def test_wide_person_specific_video_prepares_under_the_shipped_protocols(tmp_path):
    tree = build_fake_tree("person_specific", tmp_path / "root", speakers=["obama", "may"],
                           clips_per_speaker=2, seconds=1.2, defects=("no_face",), **WIDE_PERSON)
    assert tree.affected == {"no_face": "obama"}
    protocol, shipped = _wide_protocol(tmp_path)
    assert protocol.preprocessing == shipped.preprocessing  # the shipped crop, detector, 512 px
    assert check(protocol, tree.root).ok

    prepared = prepare_protocol(protocol, tree.root, progress=False)
    manifest = prepared.manifest
    entries = manifest["entries"]
    assert entries["may"]["status"] == "ok", entries["may"]
    assert entries["may"]["missing_face_frames"] <= 3  # of 60: the face is found, not stretched away
    assert manifest["failed"] == {"no_face": ["obama"]}  # no face at all: still rejected, with why
    assert "no face found" in entries["obama"]["detail"]
    assert "test part" in manifest["face_rule"]
    (clip,) = prepared.clips
    assert clip.frames.shape[1:] == (512, 512, 3)

    out = run(str(protocol.path), device="cpu", out_root=tmp_path / "results", progress=False,
              data_root=tree.root)
    static = json.loads((out / "static.json").read_text())
    assert static["clips"] == 2 and static["metrics"]["LMD"]["n"] == 2  # windows of the test part
    low, high = static["metrics"]["LMD"]["ci"]
    assert low < high  # N = 2 different windows: a real interval, not [x, x]
    truth = json.loads((out / "ground_truth.json").read_text())
    assert truth["metrics"]["LMD"]["value"] == 0


def test_wide_person_specific_video_is_not_stretched_silently(tmp_path):
    tree = build_fake_tree("person_specific", tmp_path / "root", speakers=["may"],
                           clips_per_speaker=2, seconds=1.2, **WIDE_PERSON)
    protocol, _ = _wide_protocol(tmp_path, crop="none", crop_params={})
    report = check(protocol, tree.root)
    assert not report.ok and any("non-square video: may" in p and "stretch: true" in p
                                 for p in report.problems)
    manifest = prepare_protocol(protocol, tree.root, progress=False).manifest
    assert manifest["failed"] == {"non_square_stretch": ["may"]}
    assert "640x360" in manifest["entries"]["may"]["detail"]
    with pytest.raises(ValueError, match="no item could be prepared"):
        load_splits(protocol, progress=False, root=tree.root)


def test_spear_mead_pose_and_spear_run(tmp_path):
    """SPEAR's MEAD protocols give spear_a2l a real head pose (PnP on the detected landmarks, not
    constant), and spear_t2_mead runs `spear` end to end on a fake MEAD tree (dlib for FAN, whose
    weights are a download; spear's tiny preset cut to a few steps to keep the test short)."""
    from baselines import build_method
    from baselines.spear_a2l import relative_pose
    from core.types import MethodInput

    for name in ("spear_t1_mead", "spear_t2_mead", "spear_t3_mead"):
        assert load_protocol(name).preprocessing["pose_backend"] == "pnp", name
    tree = build_fake_tree("mead", tmp_path / "root", speakers=["M003", "W009"], clips_per_speaker=1,
                           seconds=1.2)
    raw = load_protocol("spear_t2_mead").raw
    raw["id"] = "fake_spear_t2_mead"
    raw["preprocessing"].update(landmark_backend="dlib", landmark_params={},
                                crop_params={**raw["preprocessing"]["crop_params"], "detect_size": 360})
    raw["split"] = {"rule": "explicit", "train": ["M003"], "val": [], "test": ["W009"]}
    stage1 = {"epochs": 2, "window_frames": 12}
    raw["methods"] = [{"name": "spear", "config": {"epochs": 2, "vae_steps": 3, "stage1": stage1}}]
    raw["reference_results"] = []
    path = tmp_path / "fake_spear_t2_mead.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    protocol = load_protocol(path)

    splits = load_splits(protocol, progress=False, root=tree.root)
    clip = splits["train"][0]
    assert clip.pose is not None and clip.pose.shape == (clip.num_frames, 6)
    method = build_method("spear_a2l")
    rel = relative_pose(MethodInput.from_clip(clip, method.inputs).pose, clip.num_frames)
    assert np.isfinite(rel).all() and rel.std(axis=0).max() > 0  # the pose input moves

    out = run(str(protocol.path), device="cpu", out_root=tmp_path / "results", progress=False,
              data_root=tree.root)
    result = json.loads((out / "spear.json").read_text())
    assert result["clips"] == len(splits["test"]) > 0
    for metric in ("PSNR", "SSIM", "FID"):  # FID is unavailable offline but still a column
        assert metric in result["metrics"], metric
    assert np.isfinite(result["metrics"]["PSNR"]["value"])


@pytest.mark.parametrize("dataset", ["grid", "tcdtimit"])
def test_fake_tree_runs_tcsan_t4_with_tcsan_full(dataset, tmp_path):
    """`talkbench run tcsan_t4_<dataset> --methods tcsan_full` end to end at tiny on a fake tree:
    the harness labels the train clips' AUs with the protocol's backend, tcsan_full trains on the
    112 x 112 crops and its frames are scored (no resize: the protocol's frames are 112 x 112)."""
    speakers = {"grid": ["s1", "s2", "s3"], "tcdtimit": ["01M", "02M", "03F"]}[dataset]
    tree = build_fake_tree(dataset, tmp_path / "root", speakers=speakers, clips_per_speaker=2,
                           seconds=1.2, defects=())
    protocol = _fake_protocol(dataset, f"tcsan_t4_{dataset}", tree, tmp_path / f"fake_{dataset}.yaml")
    raw = yaml.safe_load(protocol.path.read_text())
    paper = load_protocol(f"tcsan_t4_{dataset}").raw  # its metrics (PSNR, SSIM, AU-F1, AU-Acc) and rows
    raw["metrics"], raw["reference_results"] = paper["metrics"], paper["reference_results"]
    protocol.path.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert main(["run", str(protocol.path), "--methods", "tcsan_full", "--root", str(tree.root),
                 "--results", str(tmp_path / "results"), "--quiet"]) == 0
    out = tmp_path / "results" / f"fake_{dataset}"
    result = json.loads((out / "tcsan_full.json").read_text())
    assert result["clips"] > 0 and result["metrics"]["PSNR"]["value"] > 10
    assert "TCSAN+Audio2AU" in (out / "README.md").read_text()


def test_gnerf_runs_end_to_end_on_a_fake_person_video(tmp_path):
    """`talkbench run gnerf_t1_test_a --methods gnerf` on a fake person-specific tree with the
    built-in defaults (PnP pose as camera, 2D landmarks lifted with the template depth, landmark-hull
    head mask, median background); a reduced tiny config so it fits the test budget."""
    tree = build_fake_tree("person_specific", tmp_path / "root", speakers=["obama"], clips_per_speaker=1,
                           seconds=2.0, defects=())
    protocol = _fake_protocol("person_specific", "gnerf_t1_test_a", tree, tmp_path / "fake.yaml")
    raw = protocol.raw
    fast = dict(stage1=dict(epochs=1, batch_size=1), stage1_piece_seconds=0.4, render_size=16, samples=6, rays=128,
                iters=5, levels=4, log2_size=10, base_res=4, finest_res=32, hidden=16, color_hidden=16)
    raw["methods"] = [{"name": "gnerf", "config": fast}]
    (tmp_path / "fake.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    out = tmp_path / "results"
    assert main(["run", str(tmp_path / "fake.yaml"), "--methods", "gnerf", "--root", str(tree.root),
                 "--results", str(out), "--quiet"]) == 0
    result = json.loads(next(out.rglob("gnerf.json")).read_text())
    assert result["clips"] > 0
    assert result["metrics"]["PSNR"]["value"] is not None
