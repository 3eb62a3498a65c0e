import copy
import json

import pytest
import yaml

from bench.protocol import (ProtocolError, load_protocol, parse_protocol, protocol_hash,
                            resolve_split, split_clips_random)


@pytest.fixture
def raw():
    return yaml.safe_load(open(load_protocol("synthtalk").path))


def test_shipped_protocol_loads(raw):
    p = load_protocol("synthtalk")
    assert p.id == "synthtalk" and p.fps == 25
    assert [m.label for m in p.metrics][:4] == ["M-LD", "M-LVD", "F-LD", "F-LVD"]
    assert p.hash == protocol_hash(raw)


def test_hash_changes_with_content_not_key_order(raw):
    reordered = dict(reversed(list(raw.items())))
    assert protocol_hash(reordered) == protocol_hash(raw)
    changed = copy.deepcopy(raw)
    changed["preprocessing"]["fps"] = 30
    assert protocol_hash(changed) != protocol_hash(raw)


@pytest.mark.parametrize("mutate, needle", [
    (lambda r: r.pop("metrics"), "'metrics'"),
    (lambda r: r.update(bogus=1), "'bogus'"),
    (lambda r: r["preprocessing"].update(fps="fast"), "preprocessing.fps"),
    (lambda r: r["preprocessing"].update(fps=-1), "preprocessing.fps"),
    (lambda r: r["preprocessing"].update(colour=1), "preprocessing.colour"),
    (lambda r: r["split"].update(rule="random"), "split.rule"),
    (lambda r: r["preprocessing"].update(crop="tight"), "preprocessing.crop"),
    (lambda r: r["preprocessing"].update(landmark_backend="openpose"), "preprocessing.landmark_backend"),
    (lambda r: r["preprocessing"].update(pose_backend="guess"), "preprocessing.pose_backend"),
    (lambda r: r["preprocessing"].update(crop_params=0.2), "preprocessing.crop_params"),
    (lambda r: r.update(split={"rule": "time"}), "test_seconds, test_fraction"),
    (lambda r: r.update(split={"rule": "time", "test_fraction": 1.5}), "split.test_fraction"),
    (lambda r: r.update(split={"rule": "time", "test_seconds": 10, "counts": {}}), "split.counts"),
    (lambda r: r["split"]["counts"].update(test=0), "split.counts.test"),
    (lambda r: r["metrics"].insert(0, {"label": "x"}), "metrics[0]"),
    (lambda r: r["metrics"].append({"name": "LMD", "label": "M-LD"}), "duplicate labels"),
    (lambda r: r.update(windowing={"mode": "fixed"}), "windowing.seconds"),
    (lambda r: r.update(windowing={"mode": "fixed", "seconds": 2, "parts": ["eval"]}), "windowing.parts"),
    (lambda r: r.update(windowing={"mode": "fixed", "seconds": 2, "parts": []}), "windowing.parts"),
    (lambda r: r.update(windowing={"mode": "fixed", "seconds": 2, "parts": "test"}), "windowing.parts"),
    (lambda r: r.update(windowing={"mode": "whole", "seconds": 2}), "windowing.seconds"),
    (lambda r: r.update(windowing={"mode": "fixed", "seconds": 2, "size": 3}), "windowing.size"),
    (lambda r: r.update(landmarks_from="guess"), "landmarks_from"),
    (lambda r: r.update(reference_results=[{"source": "x", "table": "1",
                                            "rows": [{"method": "a", "values": {"HyperIQA": 3}}]}]),
     "values.HyperIQA"),
    (lambda r: r.update(methods=[{"name": "static", "preset": "tiny", "lr": 3}]), "methods[0].lr"),
])
def test_malformed_protocol_names_the_bad_key(raw, mutate, needle):
    mutate(raw)
    with pytest.raises(ProtocolError) as err:
        parse_protocol(raw)
    assert needle in str(err.value)


def test_invalid_yaml_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("id: [unclosed\n")
    with pytest.raises(ProtocolError, match="not valid YAML"):
        load_protocol(path)


def test_unknown_protocol_lists_known():
    with pytest.raises(ProtocolError, match="synthtalk"):
        load_protocol("no-such-protocol")


def test_speaker_split_is_expanded_once_and_pinned(raw, tmp_path, monkeypatch):
    monkeypatch.setenv("TALKBENCH_HOME", str(tmp_path))
    raw["id"] = "pin-test"
    p = parse_protocol(raw)
    speakers = [f"spk{i:02d}" for i in range(1, 13)]
    split = resolve_split(p, speakers)
    assert [len(split[k]) for k in ("train", "val", "test")] == [8, 1, 3]
    assert not set(split["train"]) & set(split["test"])
    pinned = list((tmp_path / "splits").glob("pin-test-*.json"))
    assert len(pinned) == 1
    body = json.loads(pinned[0].read_text())
    assert body["speakers"] == split
    # the pinned file wins even if the dataset's speaker order changes
    assert resolve_split(p, list(reversed(speakers))) == split
    with pytest.raises(ProtocolError, match="does not have"):
        resolve_split(p, speakers[:5])
    raw["split"]["seed"] = 1  # a changed rule is a new protocol hash, hence a new pin
    resolve_split(parse_protocol(raw), speakers)
    assert len(list((tmp_path / "splits").glob("pin-test-*.json"))) == 2


def test_shipped_pin_refuses_a_changed_rule(raw, tmp_path, monkeypatch):
    import bench.protocol as bp

    monkeypatch.setattr(bp, "PROTOCOL_DIR", tmp_path)
    (tmp_path / "splits").mkdir()
    p = parse_protocol(raw)
    speakers = [f"spk{i:02d}" for i in range(1, 13)]
    (tmp_path / "splits" / "synthtalk.json").write_text(json.dumps(
        {"rule": {**raw["split"], "seed": 7}, "speakers": {"train": [], "val": [], "test": ["spk01"]}}))
    with pytest.raises(ProtocolError, match="rule changed"):
        resolve_split(p, speakers)


# -- clip-level random split (KFusion's public code: random 90/10 over clips) ----------------------

CLIP_RULE = {"rule": "clip_random", "seed": 0, "fractions": {"train": 0.9, "test": 0.1}}


@pytest.mark.parametrize("split, needle", [
    ({"rule": "clip_random", "fractions": {"train": 0.9, "test": 0.1}}, "split.seed"),
    ({"rule": "clip_random", "seed": 0}, "split.fractions"),
    ({**CLIP_RULE, "fractions": {"train": 0.9, "test": 0.2}}, "sum to 1"),
    ({**CLIP_RULE, "fractions": {"train": 1.0, "test": 0.0}}, "split.fractions.test"),
    ({**CLIP_RULE, "fractions": {"train": 0.9, "holdout": 0.1}}, "split.fractions.holdout"),
    ({**CLIP_RULE, "fractions": {"train": 0.9, "test": "10%"}}, "split.fractions.test"),
    ({**CLIP_RULE, "counts": {"test": 3}}, "split.counts"),
])
def test_malformed_clip_random_split_names_the_bad_key(raw, split, needle):
    raw["split"] = split
    with pytest.raises(ProtocolError) as err:
        parse_protocol(raw)
    assert needle in str(err.value)


def test_clip_random_split_is_seeded_exact_and_deterministic():
    ids = [f"spk{i % 7}_clip{i:03d}" for i in range(200)]
    split = split_clips_random(ids, CLIP_RULE)
    assert [len(split[k]) for k in ("train", "val", "test")] == [180, 0, 20]
    assert sorted(split["train"] + split["test"]) == sorted(ids)
    # a pure function of the seed and the ids: their order does not matter, nor the machine
    assert split_clips_random(list(reversed(ids)), CLIP_RULE) == split
    assert split["test"][:3] == ["spk0_clip070", "spk0_clip112", "spk0_clip140"]  # sha256("0:<id>") ranks
    assert split_clips_random(ids, {**CLIP_RULE, "seed": 1})["test"] != split["test"]
    # clip-level, not speaker-level: speakers have clips in train and in test
    speakers = lambda names: {n.split("_")[0] for n in names}  # noqa: E731
    assert speakers(split["test"]) <= speakers(split["train"])
    with_val = split_clips_random(ids, {**CLIP_RULE, "fractions": {"train": 0.8, "val": 0.1, "test": 0.1}})
    assert [len(with_val[k]) for k in ("train", "val", "test")] == [160, 20, 20]
    # a clip missing from the dataset moves at most one other clip across the boundary
    fewer = split_clips_random(ids[1:], CLIP_RULE)
    assert len((set(split["test"]) - {ids[0]}) ^ set(fewer["test"])) <= 1
    with pytest.raises(ProtocolError, match="unique"):
        split_clips_random(ids + ids[:1], CLIP_RULE)
    with pytest.raises(ProtocolError, match="leaves"):
        split_clips_random(ids[:3], CLIP_RULE)  # 10 % of 3 clips rounds to no test clip


def test_clip_random_split_cuts_clips_before_windowing(raw):
    from bench.data.clips import load_splits

    raw.update(id="clip-random-test", split=CLIP_RULE, windowing={"mode": "fixed", "seconds": 1.0, "hop": 1.0})
    raw["dataset"]["options"] = {"size": 2, "seed": 0}
    splits = load_splits(parse_protocol(raw), progress=False)
    parents = {name: {w.meta["parent"] for w in windows} for name, windows in splits.items()}
    assert parents["train"] and parents["test"] and not parents["val"]
    assert not parents["train"] & parents["test"]  # every window of a clip is in its clip's split
    expected = split_clips_random(sorted(parents["train"] | parents["test"]), CLIP_RULE)
    assert sorted(parents["test"]) == expected["test"]
    assert {w.speaker for w in splits["test"]} <= {w.speaker for w in splits["train"]}


def test_data_check_reports_a_clip_random_split(tmp_path):
    from bench.data.check import check
    from bench.data.fake_trees import build_fake_tree

    tree = build_fake_tree("mead", tmp_path / "root", speakers=["M003", "M005", "W009"], clips_per_speaker=4)
    report = check(load_protocol("kfusion_t1_mead_cliprandom"), tree.root)
    assert report.split_lines == ["clip_random (seed 0): train 11, val 0, test 1 of the 12 items found "
                                  "(drawn again over the items that prepare)"]
    assert report.ok and not report.unassigned  # every speaker is in the split


def test_windowing_parts_default_to_every_split_and_keep_split_order(raw):
    raw["windowing"] = {"mode": "fixed", "seconds": 2}
    assert parse_protocol(raw).windowing == {"mode": "fixed", "seconds": 2.0, "hop": 2.0,
                                             "parts": ["train", "val", "test"]}
    raw["windowing"] = {"mode": "fixed", "seconds": 2, "hop": 1, "parts": ["test", "train"]}
    assert parse_protocol(raw).windowing["parts"] == ["train", "test"]


def test_time_split_bounds():
    from bench.protocol import time_split_bounds

    assert time_split_bounds(100, 25, {"rule": "time", "test_fraction": 0.1}) == {
        "train": (0, 90), "val": (90, 90), "test": (90, 100)}
    assert time_split_bounds(100, 25, {"rule": "time", "test_seconds": 1, "val_seconds": 0.4}) == {
        "train": (0, 65), "val": (65, 75), "test": (75, 100)}
    with pytest.raises(ProtocolError, match="item x has 20 frames"):
        time_split_bounds(20, 25, {"rule": "time", "test_seconds": 1}, "item x")


def test_person_specific_protocols_crop_a_face_square_and_window_the_test_part():
    """Real 16:9 footage: the shipped NeRF protocols never stretch a frame, and score the test
    part in 2 s windows (N > 1) while training sees the whole train part."""
    for name in ("gnerf_t1_test_a", "gnerf_t1_test_b", "gnerf_t3_test_a"):
        p = load_protocol(name)
        assert p.preprocessing["crop"] == "face_square_static", name
        assert p.split["rule"] == "time"
        assert p.windowing == {"mode": "fixed", "seconds": 2.0, "hop": 2.0, "parts": ["test"]}
