import copy
import json

import pytest
import yaml

from bench.protocol import (ProtocolError, load_protocol, parse_protocol, protocol_hash,
                            resolve_split)


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
                                            "rows": [{"method": "a", "values": {"NIQE": 3}}]}]),
     "values.NIQE"),
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
