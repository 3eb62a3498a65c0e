"""gnerf_t2 (paper Table II): the stage-1 fit's own history becomes the fit report, survives a
checkpoint, and the protocol's `fit_statistics` put it beside the paper's rows; end to end on a fake
person-specific tree."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import yaml

from baselines import build_method
from bench.protocol import ProtocolError, load_protocol, parse_protocol

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = {"epochs": 2, "batch_size": 1, "window_frames": 12, "epoch_mode": "all_windows", "d_model": 16, "heads": 2,
        "layers": 1, "ff": 32, "lm_channels": 16, "lm_heads": 2, "lm_ff": 32, "fe_hidden": 16, "fe_num_layers": 1,
        "fe_heads": 2, "fe_conv_dim": 8}


def test_protocol_maps_table_ii_rows_to_fit_statistics():
    p = load_protocol("gnerf_t2")
    assert [f["label"] for f in p.fit_statistics] == ["L_s1", "Time"]
    assert {r["method"]: r["ours"] for r in p.reference_results[0]["rows"]} == {
        "w ME, w alignment bias": "gnerf_a2l_me", "w TE, w alignment bias": "gnerf_a2l_align",
        "w TE, w/o alignment bias": "gnerf_a2l"}
    assert all(m.config["epochs"] == 10 for m in p.methods)
    raw = p.raw
    bad = dict(raw, fit_statistics=[{"key": "x", "label": "LMD", "higher_is_better": False}])
    with pytest.raises(ProtocolError, match="already a metric"):
        parse_protocol(bad)
    bad = dict(raw, fit_statistics=[{"key": "x", "label": "X"}])
    with pytest.raises(ProtocolError, match="higher_is_better"):
        parse_protocol(bad)
    bad = dict(raw, fit_statistics=[])
    with pytest.raises(ProtocolError, match="L_s1"):  # the table's columns must then be metric labels
        parse_protocol(bad)


def test_fit_report_comes_from_the_history_and_survives_a_checkpoint(tmp_path):
    from bench.data.synthtalk import corpus

    clips = corpus.load_clips(corpus.build(size=2))[:2]
    m = build_method("gnerf_a2l_me", "tiny", FAST)
    assert m.fit_report({}) is None  # nothing fitted
    m.fit(clips, [], seed=0)
    rep = m.fit_report({})
    assert rep["epochs"] == 2 and rep["train_loss"] == m.train_log[-1]["train_loss"]
    assert rep["steps"] == sum(r["steps"] for r in m.train_log) > 0
    assert rep["seconds_per_epoch"] == pytest.approx(sum(r["seconds"] for r in m.train_log) / 2)
    assert rep["cpu_seconds_per_step"] > 0 and np.isfinite(rep["train_loss"])
    path = tmp_path / "a2l.ckpt.npz"
    m.save(path)
    loaded = type(m).load(path, m.config)
    assert loaded.fit_report({}) == rep


def test_gnerf_t2_runs_on_a_fake_person_video_and_reports_the_table(tmp_path):
    from bench.cli import main
    from bench.data.fake_trees import build_fake_tree

    tree = build_fake_tree("person_specific", tmp_path / "root", speakers=["obama"], clips_per_speaker=1,
                           seconds=2.0, defects=())
    raw = load_protocol("gnerf_t2").raw
    raw["id"] = "fake_t2"
    raw["preprocessing"].update(landmark_backend="dlib", landmark_params={}, pose_backend="pnp")
    raw["preprocessing"]["crop_params"] = {**raw["preprocessing"].get("crop_params", {}), "detect_size": 360}
    raw["dataset"]["options"] = {}
    raw["split"] = {"rule": "time", "test_fraction": 0.4}
    raw["windowing"] = {**raw["windowing"], "seconds": 0.4, "hop": 0.4}
    raw["methods"] = [{"name": m["name"], "config": {**FAST, "epochs": 3}} for m in raw["methods"]]
    (tmp_path / "fake.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    out = tmp_path / "results"
    assert main(["run", str(tmp_path / "fake.yaml"), "--root", str(tree.root), "--results", str(out), "--quiet"]) == 0
    folder = next(p.parent for p in out.rglob("gnerf_a2l.json"))
    text = (folder / "README.md").read_text()
    assert "## Fit statistics" in text and "Table II" in text
    for row in ("gnerf_a2l_me", "gnerf_a2l_align", "gnerf_a2l"):
        rep = json.loads((folder / f"_{row}_fit_report.json").read_text())
        assert rep["epochs"] == 3 and rep["train_loss"] > 0
        shown = [line for line in text.splitlines() if re.match(rf"\|\s*{row}\s*\|\s*talkbench\s*\|", line)]
        assert len(shown) == 1 and "—" not in shown[0], shown  # both columns measured
