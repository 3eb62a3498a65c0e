"""Scoring spread over worker processes and over torch.distributed ranks gives the result of one
process, and two processes writing one cache key leave a valid value."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch.multiprocessing as mp
import yaml

from baselines import build_method
from bench.data.clips import prepare_splits
from bench.pipeline import evaluate
from bench.protocol import load_protocol
from bench.runner import predict_all
from bench.scoring import Scorer
from core.cache import Cache
from core.paths import repo_root

pytestmark = pytest.mark.usefixtures("one_thread")

# provenance says how the work was spread and timings how long it took: everything else must match
SPREAD_ONLY = ("provenance", "timings")


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """synthtalk on 1 clip per speaker (3 test clips) with the metrics that need no downloaded
    weights (landmark, image, head motion with its routes and notes, set-level AU-F1), and a
    frame method's predictions."""
    tmp = tmp_path_factory.mktemp("parallel")
    raw = yaml.safe_load(open(load_protocol("synthtalk").path))
    raw["id"] = "synthtalk-parallel"
    raw["dataset"]["options"] = {"size": 1, "seed": 0}
    keep = {"M-LD", "LMD", "PSNR", "BeatAlign", "AU-F1"}
    raw["metrics"] = [m for m in raw["metrics"] if (m if isinstance(m, str) else m["name"]) in keep]
    raw.pop("evaluators", None)
    path = tmp / "synthtalk-parallel.yaml"
    path.write_text(yaml.safe_dump(raw))
    protocol = load_protocol(path)
    splits, _ = prepare_splits(protocol, progress=False)
    pred_dir = tmp / "pred"
    assert not predict_all(build_method("static"), splits["test"], pred_dir, progress=False)
    return path, pred_dir, tmp


def score(path, pred_dir, cache_dir, workers: int) -> dict:
    protocol = load_protocol(path)
    splits, _ = prepare_splits(protocol, progress=False)
    scorer = Scorer(protocol, splits["test"], cache=Cache(cache_dir), workers=workers)
    try:
        return evaluate(protocol, scorer, "static", pred_dir, progress=False)
    finally:
        scorer.close()


def seeded(small, name: str) -> Path:
    """A fresh cache holding only what the one-process run found of the ground truth's audio beats
    (shared by every row and process by design, `metrics.motion.cached_audio_beats`): metric
    values, detections and everything else are computed again."""
    _, _, tmp = small
    beats = tmp / "cache-1" / "audio_beats"
    if beats.is_dir():  # absent when an earlier test of this process found the beats in memory first
        shutil.copytree(beats, tmp / name / "audio_beats")
    return tmp / name


def comparable(result: dict) -> str:
    return json.dumps({k: v for k, v in result.items() if k not in SPREAD_ONLY}, sort_keys=True)


@pytest.fixture(scope="module")
def one_process(small):
    path, pred_dir, tmp = small
    return score(path, pred_dir, tmp / "cache-1", workers=1)


def test_two_workers_score_like_one(small, one_process):
    path, pred_dir, tmp = small
    two = score(path, pred_dir, seeded(small, "cache-2"), workers=2)  # a cache of its own: computed again
    metrics = one_process["metrics"]
    assert metrics["M-LD"]["n"] == 3 and metrics["AU-F1"]["clips"] and metrics["BeatAlign"]["notes"]
    assert comparable(two) == comparable(one_process)
    assert (one_process["provenance"]["scoring"]["workers"], two["provenance"]["scoring"]["workers"]) == (1, 2)


def test_frames_are_detected_once_whoever_shows_them(small, tmp_path, monkeypatch):
    """Detections are cached under the frames' content: the ground_truth row's frames (a copy of
    the reference's) reuse the reference's detections; other frames are detected."""
    path, _, _ = small
    protocol = load_protocol(path)
    clip = prepare_splits(protocol, progress=False)[0]["test"][0]
    scorer = Scorer(protocol, [clip], cache=Cache(tmp_path))
    extractor, calls = scorer.extractor, []
    real = extractor.detect
    monkeypatch.setattr(extractor, "detect", lambda frames: calls.append(len(frames)) or real(frames))
    lmk, found = scorer.reference_detection(clip)
    again, found_again = scorer.detect(clip.frames.copy())
    assert calls == [clip.num_frames] and found.any()
    assert np.array_equal(lmk, again, equal_nan=True) and np.array_equal(found, found_again)
    scorer.detect(clip.frames[:3].copy())
    assert calls == [clip.num_frames, 3]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, size: int, port: int, path, pred_dir, cache_dir, out) -> None:
    import torch

    from core import distributed

    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(size), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), TALKBENCH_DIST_BACKEND="gloo")
    distributed.init()
    try:
        # each rank its own cache: the gather goes through the process group, not a filesystem
        result = score(path, pred_dir, cache_dir / f"rank{rank}", workers=1)  # seeded by the test
        out.put((rank, comparable(result), result["provenance"]["scoring"]))
        distributed.barrier()
    finally:
        distributed.shutdown()


def test_two_gloo_ranks_score_like_one_process(small, one_process):
    path, pred_dir, tmp = small
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    for r in range(2):
        seeded(small, f"ranks/rank{r}")
    procs = [ctx.Process(target=_rank, args=(r, 2, port, path, pred_dir, tmp / "ranks", queue)) for r in range(2)]
    for p in procs:
        p.start()
    got = sorted(queue.get(timeout=300) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    (r0, result0, spread0), (r1, result1, _) = got
    assert result0 == result1 == comparable(one_process)
    assert spread0 == {"workers": 1, "world_size": 2, "backend": "gloo"}
    # each rank computed only its share of the clips: the other half is absent from its cache
    cached = [len(list((tmp / "ranks" / f"rank{r}" / "metric").rglob("*.json"))) for r in range(2)]
    assert 0 < cached[0] < sum(cached) and 0 < cached[1] < sum(cached)


WRITER = """
import sys
import numpy as np
from core.cache import Cache
from core.paths import repo_root

cache, seed = Cache(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(seed)
for i in range(60):
    value = rng.standard_normal(5000).astype(np.float32)
    cache.put_arrays("race", "samekey", {"x": value, "sum": np.float64(value.sum())})
    cache.put_json("race", "samekey", {"writer": seed, "i": i, "pad": "x" * 20000})
"""


def test_two_processes_writing_one_key_leave_a_valid_value(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(repo_root())}
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(seed)], env=env)
             for seed in (1, 2)]
    cache = Cache(tmp_path)
    while any(p.poll() is None for p in procs):  # a reader during the race never sees a torn value
        arrays, doc = cache.get_arrays("race", "samekey"), cache.get_json("race", "samekey")
        if arrays is not None:
            assert np.isclose(arrays["x"].sum(), arrays["sum"], rtol=1e-4)
        if doc is not None:
            assert doc["writer"] in (1, 2) and len(doc["pad"]) == 20000
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    arrays, doc = cache.get_arrays("race", "samekey"), cache.get_json("race", "samekey")
    assert np.isclose(arrays["x"].sum(), arrays["sum"], rtol=1e-4) and doc["i"] == 59
    assert not list(tmp_path.rglob("*.tmp"))  # no writer left a temporary file behind
