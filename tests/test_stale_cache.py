"""Caches that cannot go stale: a value cached by old code is never returned by new code.

The end-to-end check edits a metric's source in a temporary copy of talkbench and scores the same
prediction with the same `$TALKBENCH_HOME` before and after: the edited code's value comes back,
not the cached one. The fingerprint itself is checked on a throw-away package (transitive imports,
imports inside functions).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from core import hashing

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("core", "faces", "metrics", "baselines", "bench", "protocols")

DRIVER = r'''
import json
import numpy as np
from bench.protocol import load_protocol, parse_protocol
from bench.scoring import Scorer
from core.types import Clip, Prediction

raw = dict(load_protocol("synthtalk").raw)
raw["metrics"] = [{"name": "M-LD"}]
protocol = parse_protocol(raw)
rng = np.random.default_rng(0)
ref = rng.uniform(50, 200, (20, 68, 2)).astype(np.float32)
clip = Clip(id="c0", speaker="s", audio=np.zeros(16000 * 20 // 25, np.float32), landmarks=ref)
pred = Prediction("c0", landmarks=ref + 1.5)
(outcome,) = Scorer(protocol, [clip]).score({"c0": pred}, {"c0": "pred-c0"}, {}, {"landmarks"})
print(json.dumps({"value": outcome.per_clip["c0"]}))
'''


def score_once(tree: Path, home: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree), "TALKBENCH_HOME": str(home)}
    out = subprocess.run([sys.executable, "-c", DRIVER], cwd=tree, env=env, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["value"]


def cached_values(home: Path) -> int:
    return len(list((home / "cache" / "metric").rglob("*.json")))


def test_an_edited_metric_is_recomputed_not_read_from_the_cache(tmp_path):
    tree, home = tmp_path / "talkbench", tmp_path / "home"
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tree / package, ignore=shutil.ignore_patterns("__pycache__"))
    first = score_once(tree, home)
    assert abs(first - 1.5 * np.sqrt(2)) < 1e-5  # every point off by (1.5, 1.5)
    assert score_once(tree, home) == first and cached_values(home) == 1  # the cache answers

    source = tree / "metrics" / "landmark.py"
    text = source.read_text()
    line = "    per_frame = np.linalg.norm(pred - ref, axis=-1).mean(axis=1)\n"
    assert line in text
    source.write_text(text.replace(line, line.rstrip("\n") + " * 2.0\n"))
    edited = score_once(tree, home)
    assert abs(edited - 2 * first) < 1e-5, "the old code's cached value came back"
    assert cached_values(home) == 2


def test_the_code_fingerprint_follows_imports_inside_functions(tmp_path, monkeypatch):
    pkg = tmp_path / "fpdemo"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "top.py").write_text("def value():\n    from fpdemo.helper import K\n    return K\n")
    (pkg / "helper.py").write_text("K = 1\n")
    (pkg / "unrelated.py").write_text("J = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    def fingerprint():
        hashing._CODE_FINGERPRINTS.clear()  # one process remembers; a new process rereads
        return hashing.code_fingerprint("fpdemo.top", packages=("fpdemo",))

    before = fingerprint()
    assert fingerprint() == before
    (pkg / "unrelated.py").write_text("J = 2\n")
    assert fingerprint() == before  # a module it does not import does not count
    (pkg / "helper.py").write_text("K = 2\n")
    assert fingerprint() != before  # a module it imports, inside a function, does

