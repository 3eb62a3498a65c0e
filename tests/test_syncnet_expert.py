"""SyncNet experts (bench/experts.py): deterministic training, the checkpoint through the metric's
loading path, config checks, the runner hook, and the evaluation's offset logic.

Tiny settings (width 1/16, a few steps on 2-3 synthtalk clips) keep this file well under a minute;
whether a full expert learns sync is checked by `talkbench sanity synthtalk` (results/synthtalk/
sanity.json) and reported by the main job.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np
import pytest
import torch

from bench import experts
from bench.data.synthtalk import corpus
from bench.protocol import load_protocol, parse_protocol
from bench.scoring import Scorer
from metrics import build_metric
from metrics import syncnet as sn
from core.types import ClipPair
from core.errors import MetricUnavailable

TINY = experts.SyncExpertConfig(width=1 / 16, embedding_dim=16, epochs=1, batch_size=8, negatives=2,
                                max_clips=2)


@pytest.fixture(scope="module")
def clips():
    root = corpus.build(size=1, seed=0, progress=False)
    return corpus.load_clips(root)[:3]


@pytest.fixture(autouse=True)
def _fresh_cache():
    sn.clear_cache()
    yield
    sn.clear_cache()


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pair_of(clip, audio=None) -> ClipPair:
    return ClipPair(clip.id, {"frames": clip.frames, "landmarks": clip.landmarks},
                    {"frames": clip.frames, "landmarks": clip.landmarks}, fps=clip.fps,
                    audio=clip.audio if audio is None else audio, sample_rate=clip.sample_rate)


def test_training_is_deterministic_and_round_trips_through_the_metric(clips, tmp_path):
    paths = []
    for run in range(2):
        model, stats = experts.train(clips, TINY, seed=3, progress=False)
        assert stats["clips"] == 2 and stats["steps"] >= 1 and np.isfinite(stats["final_loss"])
        path = tmp_path / f"run{run}.pt"
        sn.save_expert(path, model, {**TINY.to_dict(), "seed": 3})
        paths.append(path)
    assert sha(paths[0]) == sha(paths[1]), "same seed, same data: the checkpoint must repeat byte for byte"
    assert stats["final_loss"] != stats["first_loss"]  # it trained

    # the checkpoint loads through the metric's path at its saved width, strictly
    loaded = sn.load_syncnet(paths[0])
    assert loaded.width == TINY.width and loaded.embedding_dim == TINY.embedding_dim
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    metric = build_metric("LSE-D", {"weights": sn.EXPERT_WEIGHTS, "weights_path": str(paths[0])})
    assert metric.identity()["weights"] == {sn.EXPERT_WEIGHTS: sha(paths[0])}
    clip = clips[2]
    value = metric.clip_value(pair_of(clip))
    direct = sn.evaluate(model, experts.clip_inputs(clip).video, clip.audio)
    assert value == pytest.approx(direct.min_dist, rel=1e-5)


def test_expert_config_mismatch_and_missing_files_are_refused(clips, tmp_path):
    model = sn.SyncNet(embedding_dim=16, width=1 / 16)
    path = tmp_path / "expert.pt"
    sn.save_expert(path, model, TINY.to_dict())
    with pytest.raises(experts.ExpertError, match=r"another config \(.*width: checkpoint 0.0625 vs requested 0.125"):
        experts.check_config(path, replace(TINY, width=0.125))
    experts.check_config(path, TINY)  # the same config is accepted
    # a checkpoint whose weights do not fit its saved architecture
    blob = torch.load(path, weights_only=True)
    blob["config"]["width"] = 0.125
    bad = tmp_path / "bad.pt"
    torch.save(blob, bad)
    with pytest.raises(MetricUnavailable, match="does not match the SyncNet architecture at"):
        sn.load_syncnet(bad)
    # the expert name without a trained checkpoint: unavailable, with the command that trains it
    with pytest.raises(MetricUnavailable, match="talkbench experts train syncnet"):
        build_metric("LSE-C", {"weights": sn.EXPERT_WEIGHTS})
    with pytest.raises(MetricUnavailable, match="missing"):
        build_metric("LSE-C", {"weights": sn.EXPERT_WEIGHTS, "weights_path": str(tmp_path / "no.pt")})
    # an official-format state dict is not an expert checkpoint
    official = tmp_path / "official.model"
    torch.save(sn.SyncNet(embedding_dim=16, width=1 / 16).state_dict(), official)
    with pytest.raises(MetricUnavailable, match="not a talkbench SyncNet expert"):
        build_metric("LSE-C", {"weights": sn.EXPERT_WEIGHTS, "weights_path": str(official)})
    with pytest.raises(ValueError, match="width"):
        sn.SyncNet(width=0)


def test_official_width_is_unchanged():
    # width 1 keeps the official parameter shapes (strict loading of syncnet_v2.model relies on it)
    state = sn.SyncNet().state_dict()
    assert state["netcnnlip.0.weight"].shape == (96, 3, 5, 7, 7)
    assert state["netfclip.0.weight"].shape == (512, 512) and state["netfclip.3.weight"].shape == (1024, 512)
    narrow = sn.SyncNet(embedding_dim=128, width=0.125).state_dict()
    assert narrow["netcnnlip.0.weight"].shape == (12, 3, 5, 7, 7)
    assert narrow["netcnnaud.18.weight"].shape == (64, 32, 5, 4)
    assert narrow["netfcaud.3.weight"].shape == (128, 64)


def test_resolve_trains_once_and_the_scorer_builds_the_metrics_with_it(clips, monkeypatch):
    # a protocol that does not pin its expert (synthtalk does: tests/test_pinned_evaluators.py)
    protocol = parse_protocol({k: v for k, v in load_protocol("synthtalk").raw.items() if k != "evaluators"})
    before = (protocol.metrics, protocol.hash)
    assert experts.needs_syncnet_expert(protocol)
    splits = {"train": clips[:2], "val": [], "test": clips[2:]}
    calls = []
    real_train = experts.train
    monkeypatch.setattr(experts, "train", lambda *a, **k: calls.append(1) or real_train(*a, **k))
    evaluators = experts.resolve(protocol, splits, progress=False, cfg=TINY)
    again = experts.resolve(protocol, splits, progress=False, cfg=TINY)
    assert len(calls) == 1, "a trained expert is reused"
    assert again == evaluators and set(evaluators) == {sn.EXPERT_WEIGHTS}
    expert = evaluators[sn.EXPERT_WEIGHTS]
    path = expert["path"]
    assert path.startswith(str(experts.talkbench_home() / "experts" / "synthtalk"))
    assert expert["sha256"] == hashlib.sha256(open(path, "rb").read()).hexdigest()
    assert (protocol.metrics, protocol.hash) == before, "the protocol is not rewritten"
    # the scorer gets the expert explicitly; the official entries are left alone
    scorer = Scorer(protocol, clips[2:], evaluators=evaluators)
    built = {spec.label: (spec, metric, why) for spec, metric, why in scorer.metrics}
    for label in ("LSE-D (expert)", "LSE-C (expert)", "AV-offset (expert)"):
        spec, metric, why = built[label]
        assert why is None and metric.params["weights_path"] == path and "weights_path" not in spec.params
        assert metric.identity()["weights"] == {sn.EXPERT_WEIGHTS: expert["sha256"]}
    assert built["LSE-D"][1] is None and "syncnet_v2" in built["LSE-D"][2]
    # without the evaluator the expert metrics are unavailable, with the command that trains it
    assert "talkbench experts train" in {s.label: w for s, _, w in Scorer(protocol, clips[2:]).metrics}["LSE-D (expert)"]
    # another train split is another expert; an empty train split gives no evaluator
    other = experts.checkpoint_path(protocol, clips[1:3], TINY, 0)
    assert str(other) != path
    assert experts.resolve(protocol, {"train": []}, progress=False, cfg=TINY) == {}


def test_offset_logic_on_hand_made_embeddings():
    # embeddings where the audio window j matches the video window j - k: the evaluation must report
    # offset -k (audio late), and in-sync embeddings must give the larger confidence
    rng = np.random.default_rng(0)
    n, k = 40, 3
    vid = torch.from_numpy(rng.normal(size=(n, 8)).astype(np.float32))
    aud_sync = vid + 0.05 * torch.from_numpy(rng.normal(size=(n, 8)).astype(np.float32))
    aud_late = torch.cat([torch.from_numpy(rng.normal(size=(k, 8)).astype(np.float32)), aud_sync[:-k]])
    sync = sn.sync_scores(sn.offset_distances(vid, aud_sync))
    late = sn.sync_scores(sn.offset_distances(vid, aud_late))
    assert sync.offset == 0 and late.offset == -k
    assert sync.conf > late.conf > 0 and sync.min_dist < late.min_dist
