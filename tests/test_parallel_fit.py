"""`talkbench run --workers 2`: the trainable rows are fitted and predicted in two spawned worker
processes before scoring, and the results are those of one process."""

import json
import shutil

import yaml

from bench.protocol import load_protocol
from bench.runner import run

METHODS = ["static", "mean_motion", "audio_energy"]  # two trainable rows: two worker jobs


def _protocol(tmp_path):
    raw = yaml.safe_load(open(load_protocol("synthtalk").path))
    raw["id"] = "synthtalk-parallel"
    raw["dataset"]["options"] = {"size": 1, "seed": 0}
    raw["methods"] = METHODS
    raw["metrics"] = [m for m in raw["metrics"]
                      if (m if isinstance(m, str) else m["name"]) in ("M-LD", "F-LVD", "LMD")]
    path = tmp_path / "synthtalk-parallel.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _values(out):
    got = {}
    for row in METHODS:
        r = json.loads((out / f"{row}.json").read_text())
        got[row] = ({k: (m["value"], m["per_clip"]) for k, m in r["metrics"].items()},
                    r["provenance"].get("checkpoint_sha256"))
    return got


def test_two_workers_give_the_results_of_one(tmp_path, monkeypatch):
    path = _protocol(tmp_path)
    home = tmp_path / "home"
    monkeypatch.setenv("TALKBENCH_HOME", str(home))
    two = run(str(path), out_root=tmp_path / "results2", progress=False, workers=2)
    timings = json.loads((two / "_run_timings.json").read_text())
    assert timings["command"]["workers"] == 2 and timings["stages"]["fit_workers_s"] > 0
    assert all(timings["rows"][row][0].get("in_worker") for row in ("mean_motion", "audio_energy"))
    assert not timings["rows"]["static"][0].get("in_worker")  # nothing to learn: not a worker job
    assert "fitted and predicted in 2 parallel worker processes" in (two / "README.md").read_text()
    got = _values(two)
    # a second run finds every checkpoint and prediction: no worker starts
    again = json.loads((run(str(path), out_root=tmp_path / "results2", progress=False, workers=2)
                        / "_run_timings.json").read_text())
    assert "fit_workers_s" not in again["stages"]
    assert not any(r.get("in_worker") for runs in again["rows"].values() for r in runs)
    # one process, from scratch (the corpus is kept): the same checkpoints and values
    shutil.rmtree(home / "runs")
    one = run(str(path), out_root=tmp_path / "results1", progress=False, workers=1)
    assert _values(one) == got
    assert "fit_workers_s" not in json.loads((one / "_run_timings.json").read_text())["stages"]
