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
"""

from __future__ import annotations

import json

import pytest
import yaml

from bench.cli import main
from bench.data.check import check
from bench.data.fake_trees import build_fake_tree
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
    if raw["preprocessing"].get("crop") in ("landmark_box", "syncnet"):
        raw["preprocessing"]["crop_params"] = {"detect_size": 360}
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
        raw["windowing"] = {"mode": "fixed", "seconds": 1.0}
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
