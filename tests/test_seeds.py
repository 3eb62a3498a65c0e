"""Seed variance (`talkbench run --seeds`), reproduction (`talkbench reproduce`) and results free
of machine paths, on a mini synthtalk protocol with one cheap learned method."""

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from bench.protocol import load_protocol
from bench.report import within_spread
from bench.results import read_results, seed_spread
from bench.runner import run

METHODS = ["static", "mean_motion"]


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """synthtalk, 2 clips per speaker, three cheap metrics (LPIPS is unavailable: no weights in the
    test home, so its message names a file there), run with --seeds 0,1."""
    tmp = tmp_path_factory.mktemp("seeds")
    raw = yaml.safe_load(open(load_protocol("synthtalk").path))
    raw["id"] = "synthtalk-seeds"
    raw["dataset"]["options"] = {"size": 2, "seed": 0}
    raw["methods"] = METHODS
    raw["metrics"] = ["M-LD", {"name": "LMD", "label": "LMD", "params": {"region": "mouth"}}, "LPIPS"]
    path = tmp / "synthtalk-seeds.yaml"
    path.write_text(yaml.safe_dump(raw))
    out = run(str(path), out_root=tmp / "results", progress=False, seeds=[0, 1])
    return path, out


def test_seeds_run_learned_rows_once_per_seed(seeded):
    _, out = seeded
    assert (out / "mean_motion.seeds.json").exists()
    assert not (out / "static.seeds.json").exists()  # nothing to learn: run once
    main = json.loads((out / "mean_motion.json").read_text())
    record = json.loads((out / "mean_motion.seeds.json").read_text())
    assert main["provenance"]["seed"] == 0 and record["seeds"] == [0, 1]
    assert record["metrics"]["M-LD"]["values"]["0"] == main["metrics"]["M-LD"]["value"]
    assert set(record["runs"]) == {"0", "1"}
    results = read_results(out)
    assert [r["row"] for r in results.methods] == ["mean_motion", "static"]  # the seeds file is no row
    spread = seed_spread(results)["mean_motion"]["M-LD"]
    assert spread["n"] == 2 and spread["min"] <= spread["mean"] <= spread["max"]
    report = (out / "README.md").read_text()
    assert "## Seed variance of the learned methods" in report
    assert "| mean_motion | 0,1 " in report and " ± " in report


def test_rankings_within_the_seed_spread_are_marked():
    rows = [{"row": "a", "metrics": {"M": {"value": 1.0}}}, {"row": "b", "metrics": {"M": {"value": 1.05}}},
            {"row": "c", "metrics": {"M": {"value": 2.0}}}, {"row": "d", "metrics": {"M": {"value": 2.01}}}]
    spread = {"a": {"M": {"range": 0.1}}}
    # a-b within a's range; c-d closer still, but neither has a seed record: not compared
    assert within_spread(rows, spread) == {"M": [("a", "b", pytest.approx(0.05), 0.1)]}
    assert within_spread(rows, {}) == {}


def test_results_name_no_machine_path(seeded, talkbench_home):
    _, out = seeded
    forbidden = {str(talkbench_home), str(Path(talkbench_home).resolve()), str(Path.home()),
                 str(out.parent.parent)}
    texts = {p: p.read_text() for p in list(out.glob("*.json")) + [out / "README.md"]}
    for path, text in texts.items():
        for needle in forbidden:
            assert needle not in text, f"{path.name} names {needle}"
    lpips = json.loads((out / "static.json").read_text())["metrics"]["LPIPS"]["unavailable"]
    assert lpips.startswith("$TALKBENCH_HOME/weights/")


def test_reproduce_from_a_clean_cache_passes(seeded, tmp_path, capsys):
    """The committed folder recomputed with an empty $TALKBENCH_HOME: the row without training is
    bit for bit the same, the learned one within its seed spread."""
    from bench.cli import main

    path, out = seeded
    home = os.environ["TALKBENCH_HOME"]
    assert main(["reproduce", str(path), "--results", str(out.parent), "--fresh-home", "--quiet"]) == 0
    assert os.environ["TALKBENCH_HOME"] == home  # restored
    printed = capsys.readouterr().out
    assert "reproduced: every value passes" in printed


def test_reproduce_prints_every_difference(seeded, tmp_path):
    from bench.reproduce import compare, report_lines

    _, out = seeded
    committed = tmp_path / out.name
    shutil.copytree(out, committed)

    def edit(name, change):
        data = json.loads((committed / name).read_text())
        change(data)
        (committed / name).write_text(json.dumps(data))

    base = json.loads((out / "mean_motion.json").read_text())["metrics"]
    edit("static.json", lambda d: d["metrics"]["M-LD"].update(value=d["metrics"]["M-LD"]["value"] + 1e-3))
    edit("mean_motion.seeds.json", lambda d: d["metrics"]["M-LD"]["values"].update(
        {"1": base["M-LD"]["value"] + 0.01}))  # a seed range of 0.01 on M-LD, 0 on LMD
    edit("mean_motion.json", lambda d: (d["metrics"]["M-LD"].update(value=base["M-LD"]["value"] + 0.005),
                                        d["metrics"]["LMD"].update(value=base["LMD"]["value"] + 0.5)))
    found = {(d.row, d.metric): d for d in compare(committed, out)}
    assert set(found) == {("static", "M-LD"), ("mean_motion", "M-LD"), ("mean_motion", "LMD")}
    assert not found["static", "M-LD"].passed and "must be equal" in found["static", "M-LD"].why
    assert found["mean_motion", "M-LD"].passed and found["mean_motion", "M-LD"].allowed == pytest.approx(0.01)
    assert not found["mean_motion", "LMD"].passed
    text = "\n".join(report_lines(list(found.values())))
    assert text.count("FAIL") == 2 and text.count("pass") == 1
    assert compare(out, out) == []
