"""The shared torch trainer: determinism, resume, checkpoints, state errors, helpers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
import torch

from core.types import MethodInput, Prediction
from baselines.reference import face_scale
from baselines.torch_method import (LOSS_CURVE, TRAIN_LOG, TRAIN_STATE, TorchMethod, TorchMethodConfig,
                                    crop_starts, emotion_index, epoch_windows, frame_audio,
                                    landmarks_denormalise, landmarks_normalise, random_windows,
                                    samples_per_frame, window_starts)
from core.errors import CheckpointError
from core.types import Clip

threads_before = torch.get_num_threads()


def make_clips(n: int, seed: int = 0, frames: int = 30) -> list[Clip]:
    """Clips whose mouth opening follows the audio amplitude envelope (learnable, fast)."""
    rng = np.random.default_rng(seed)
    clips = []
    for i in range(n):
        t = frames + int(rng.integers(0, 10))
        env = np.abs(np.sin(np.linspace(0, rng.uniform(2, 6), t)))
        audio = (np.repeat(env, 640) * rng.standard_normal(t * 640) * 0.3).astype(np.float32)
        base = rng.uniform(60, 190, size=(68, 2)).astype(np.float32)
        base[0], base[16] = (70, 120), (186, 120)
        lmk = np.repeat(base[None], t, axis=0)
        lmk[:, 57, 1] += 8 * env
        clips.append(Clip(id=f"c{i}", speaker=f"s{i % 3}", audio=audio, landmarks=lmk.astype(np.float32),
                          emotion="neutral"))
    return clips


@dataclass
class ToyConfig(TorchMethodConfig):
    hidden: int = 16
    PRESETS: ClassVar[dict] = {"tiny": {"epochs": 4, "lr": 3e-3, "batch_size": 3, "window_frames": 12,
                                        "threads": 1},
                               "paper": {"epochs": 100}}


class Toy(TorchMethod):
    """Per-frame MLP from framed audio energy features to normalised landmarks (with dropout)."""

    name = "toy_torch"
    inputs = frozenset({"audio", "identity_landmarks"})
    outputs = frozenset({"landmarks"})
    Config = ToyConfig

    def build_model(self):
        h = self.config.hidden
        return torch.nn.Sequential(torch.nn.Linear(640, h), torch.nn.ReLU(), torch.nn.Dropout(0.1),
                                   torch.nn.Linear(h, 136))

    def make_batch(self, clips, rng, device, starts=None):
        w = random_windows(clips, rng, self.window_length(clips[0].fps), starts)
        target = landmarks_normalise(w.landmarks, w.identity) - landmarks_normalise(w.identity, w.identity)[:, None]
        audio = torch.from_numpy(w.audio).reshape(len(clips), w.frames, 640)
        return {"audio": audio.abs().to(device), "target": torch.from_numpy(target).to(device)}

    def compute_loss(self, model, batch):
        out = model(batch["audio"]).reshape(batch["target"].shape)
        return torch.mean((out - batch["target"]) ** 2)

    def infer(self, model, inp, device):
        audio = torch.from_numpy(inp.audio[:inp.num_frames * 640].reshape(1, inp.num_frames, 640)).abs()
        disp = model(audio.to(device)).reshape(inp.num_frames, 68, 2).cpu().numpy()
        ident = inp.identity_landmarks
        lmk = landmarks_denormalise(landmarks_normalise(ident, ident)[None] + disp, ident)
        return Prediction(inp.clip_id, landmarks=lmk.astype(np.float32))


def test_normalise_round_trip_numpy_and_torch():
    rng = np.random.default_rng(3)
    ident = rng.uniform(50, 200, (68, 2)).astype(np.float64)
    seq = ident[None] + rng.normal(0, 2, (5, 68, 2))
    norm = landmarks_normalise(seq, ident)
    assert norm.shape == seq.shape
    np.testing.assert_allclose(landmarks_denormalise(norm, ident), seq, atol=1e-9)
    # identity-centred, in units of jaw width
    n0 = landmarks_normalise(ident, ident)
    np.testing.assert_allclose(n0.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(n0[16] - n0[0]), 1.0, atol=1e-12)
    assert face_scale(ident) == pytest.approx(np.linalg.norm(ident[16] - ident[0]))
    # batched torch: B x T x 68 x 2 against B x 68 x 2
    tb = torch.from_numpy(np.stack([seq, seq * 1.5]))
    ib = torch.from_numpy(np.stack([ident, ident * 1.5]))
    out = landmarks_normalise(tb, ib)
    np.testing.assert_allclose(out[0].numpy(), norm, atol=1e-9)
    np.testing.assert_allclose(out[1].numpy(), norm, atol=1e-9)  # scale-invariant
    np.testing.assert_allclose(landmarks_denormalise(out, ib).numpy(), tb.numpy(), atol=1e-9)


def test_random_windows_align_audio_and_frames():
    clips = make_clips(3)
    w = random_windows(clips, np.random.default_rng(0), window_frames=10)
    assert w.audio.shape == (3, 10 * 640) and w.landmarks.shape == (3, 10, 68, 2)
    for k, clip in enumerate(clips):
        s = w.starts[k]
        np.testing.assert_array_equal(w.audio[k], clip.audio[s * 640:(s + 10) * 640])
        np.testing.assert_array_equal(w.landmarks[k], clip.landmarks[s:s + 10])
        np.testing.assert_array_equal(w.identity[k], clip.landmarks[0])
    # windows longer than the shortest clip shrink to it
    w = random_windows(clips, np.random.default_rng(0), window_frames=1000)
    assert w.frames == min(c.num_frames for c in clips)
    assert emotion_index("surprise") == emotion_index("surprised") and emotion_index(None) == 0
    with pytest.raises(ValueError, match="unknown emotion"):
        emotion_index("bored")


def test_fit_learns_and_writes_logs(tmp_path):
    train, val = make_clips(6), make_clips(2, seed=1)
    method = Toy(ToyConfig.preset("tiny", epochs=25))
    method.fit(train, val, seed=0, workdir=tmp_path)
    logged = json.loads((tmp_path / TRAIN_LOG).read_text())["epochs"]
    assert len(logged) == 25 and all("val_loss" in r for r in logged)
    assert logged[-1]["train_loss"] < 0.5 * logged[0]["train_loss"]
    assert (tmp_path / LOSS_CURVE).stat().st_size > 1000
    assert (tmp_path / TRAIN_STATE).exists()
    # the cosine schedule: lr starts at lr and decays towards lr_min
    assert logged[0]["lr"] == pytest.approx(3e-3) and logged[-1]["lr"] < 1e-4
    pred = method.predict(MethodInput.from_clip(val[0], method.inputs))
    assert pred.landmarks.shape == val[0].landmarks.shape
    assert torch.is_grad_enabled()  # predict's no_grad did not leak
    assert torch.are_deterministic_algorithms_enabled() is False  # restored after fit
    assert torch.get_num_threads() == threads_before  # so is the thread count



def test_same_seed_same_state_bitwise_and_other_seed_differs():
    train = make_clips(5)
    states = []
    for seed in (7, 7, 8):
        m = Toy()
        m.fit(train, [], seed=seed)
        states.append(m.state())
    assert list(states[0]) == sorted(states[0])
    for k in states[0]:
        assert states[0][k].dtype == np.float32
        np.testing.assert_array_equal(states[0][k], states[1][k])
    assert any(not np.array_equal(states[0][k], states[2][k]) for k in states[0])


def test_resume_after_interrupt_matches_uninterrupted(tmp_path):
    train, val = make_clips(5), make_clips(2, seed=1)
    full = Toy()
    full.fit(train, val, seed=3, workdir=tmp_path / "full")

    class Interrupt(Exception):
        pass

    def stop_at_2(epoch, record):
        if epoch == 2:
            raise Interrupt

    part = Toy()
    part.on_epoch_end = stop_at_2
    with pytest.raises(Interrupt):
        part.fit(train, val, seed=3, workdir=tmp_path / "part")
    saved = torch.load(tmp_path / "part" / TRAIN_STATE, weights_only=False)
    assert saved["epoch"] == 2
    resumed = Toy()  # a fresh process would start like this
    seen = []
    resumed.on_epoch_end = lambda epoch, record: seen.append(epoch)
    resumed.fit(train, val, seed=3, workdir=tmp_path / "part")
    assert seen == [3, 4]  # only the missing epochs ran
    a, b = full.state(), resumed.state()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert [r["train_loss"] for r in full.train_log] == [r["train_loss"] for r in resumed.train_log]
    # a train state from another seed is not resumed from
    other = Toy()
    seen.clear()
    other.on_epoch_end = lambda epoch, record: seen.append(epoch)
    other.fit(train, val, seed=4, workdir=tmp_path / "part")
    assert seen == [1, 2, 3, 4]


def test_checkpoint_round_trip_and_config_mismatch(tmp_path):
    train = make_clips(4)
    m = Toy()
    m.fit(train, [], seed=0)
    path = tmp_path / "model.ckpt.npz"
    m.save(path)
    loaded = Toy.load(path, Toy.Config.preset("tiny"))
    inp = MethodInput.from_clip(train[0], m.inputs)
    np.testing.assert_array_equal(m.predict(inp).landmarks, loaded.predict(inp).landmarks)
    with pytest.raises(CheckpointError, match="hidden"):
        Toy.load(path, Toy.Config.preset("tiny", hidden=32))


def test_set_state_errors_are_clear():
    m = Toy()
    with pytest.raises(RuntimeError, match="fit or load"):
        m.predict(MethodInput.from_clip(make_clips(1)[0], m.inputs))
    m.set_state(_fresh_state())  # builds the model on demand
    good = m.state()
    bad = dict(good)
    bad.pop("0.weight")
    bad["extra.bias"] = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match=r"missing \['0.weight'\].*unexpected \['extra.bias'\]"):
        m.set_state(bad)
    wrong = dict(good)
    wrong["0.weight"] = np.zeros((2, 2), np.float32)
    with pytest.raises(ValueError, match="0.weight has shape"):
        m.set_state(wrong)


def _fresh_state():
    m = Toy()
    m.model = m.build_model()
    return m.state()


# ----------------------------------------------------------------------------- epochs and windows

def _record_windows(method: Toy) -> list[list[tuple[str, int, int]]]:
    """Wrap `method.make_batch`; returns per-epoch lists of (clip id, start, length) it was asked for."""
    epochs: list[list[tuple[str, int, int]]] = [[]]
    inner = method.make_batch

    def spy(clips, rng, device, starts=None):
        batch = inner(clips, rng, device, starts)
        length = batch["target"].shape[1]
        if starts is None:  # one_per_clip: the starts random_windows drew are not returned; record -1
            starts = [-1] * len(clips)
        epochs[-1].extend((c.id, int(s), length) for c, s in zip(clips, starts))
        return batch

    method.make_batch = spy
    method.on_epoch_end = lambda epoch, record: epochs.append([])
    return epochs


def test_all_windows_epoch_visits_every_window_once_and_covers_every_frame():
    # clip lengths 30..39 and one of 3..8 frames (shorter than the 12-frame window)
    train = make_clips(5) + [make_clips(1, seed=9, frames=3)[0]]
    train[-1].id = "short"
    short = train[-1].num_frames
    assert short < 12
    method = Toy(ToyConfig.preset("tiny", epochs=3, epoch_mode="all_windows"))
    seen = _record_windows(method)
    method.fit(train, [], seed=0)
    epochs = seen[:3]
    expected = sorted((c.id, s, min(12, c.num_frames)) for c in train
                      for s in window_starts(c.num_frames, min(12, c.num_frames), min(12, c.num_frames)))
    for visits in epochs:
        assert sorted(visits) == expected  # each window exactly once per epoch
        for clip in train:  # together they cover every frame of every clip
            covered = np.zeros(clip.num_frames, bool)
            for cid, start, length in visits:
                if cid == clip.id:
                    covered[start:start + length] = True
            assert covered.all(), clip.id
    assert epochs[0] != epochs[1]  # reshuffled every epoch, from the seeded generator
    assert ("short", 0, short) in epochs[0]  # a short clip is one whole window, not cut to a neighbour's
    steps = len(epoch_windows(train, 12, 3, None))
    assert [r["steps"] for r in method.train_log] == [steps] * 3
    assert method.train_log[0]["windows"] == len(expected)
    # the same seed gives the same visiting order
    again = Toy(ToyConfig.preset("tiny", epochs=3, epoch_mode="all_windows"))
    seen_again = _record_windows(again)
    again.fit(train, [], seed=0)
    assert seen_again[:3] == epochs


def test_one_per_clip_epoch_keeps_one_random_window_per_clip():
    train = make_clips(7)
    method = Toy(ToyConfig.preset("tiny", epochs=2))
    assert method.config.epoch_mode == "one_per_clip"
    seen = _record_windows(method)
    method.fit(train, [], seed=0)
    assert sorted(cid for cid, _, _ in seen[0]) == sorted(c.id for c in train)
    assert [r["steps"] for r in method.train_log] == [3, 3]  # ceil(7 / 3)
    with pytest.raises(ValueError, match="epoch_mode"):
        Toy(ToyConfig.preset("tiny", epoch_mode="every_window")).fit(train, [], seed=0)


def test_all_windows_resume_matches_uninterrupted(tmp_path):
    train = make_clips(4)
    cfg = ToyConfig.preset("tiny", epochs=3, epoch_mode="all_windows")
    full = Toy(cfg)
    full.fit(train, [], seed=5, workdir=tmp_path / "full")

    class Interrupt(Exception):
        pass

    def stop_at_1(epoch, record):
        if epoch == 1:
            raise Interrupt

    part = Toy(cfg)
    part.on_epoch_end = stop_at_1
    with pytest.raises(Interrupt):
        part.fit(train, [], seed=5, workdir=tmp_path / "part")
    resumed = Toy(cfg)
    resumed.fit(train, [], seed=5, workdir=tmp_path / "part")
    a, b = full.state(), resumed.state()
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_window_seconds_resolve_against_the_clips_fps():
    method = Toy(ToyConfig.preset("tiny", window_seconds=1.0))
    assert method.window_length(30) == 30 and method.window_length(25) == 25
    assert Toy(ToyConfig.preset("tiny")).window_length(30) == 12  # window_frames when no seconds
    # 16 kHz at 30 fps: 533.33 samples per frame; a 1-s window is 16000 samples, cut where cut_clip cuts
    clip = make_clips(1, frames=60)[0]
    clip.fps = 30.0
    with pytest.raises(ValueError, match="whole number"):
        samples_per_frame(clip)
    spf = samples_per_frame(clip, whole=False)
    assert spf == pytest.approx(16000 / 30)
    audio = np.arange(len(clip.audio), dtype=np.float32)
    assert len(frame_audio(audio, spf, 30, 30)) == 16000 and frame_audio(audio, spf, 30, 30)[0] == 16000
    assert np.array_equal(frame_audio(audio, 640, 2, 3), audio[1280:3200])  # whole spf: as before
    w = random_windows([clip, clip], np.random.default_rng(0), 30)
    assert w.audio.shape == (2, 16000) and w.landmarks.shape == (2, 30, 68, 2)
    with pytest.raises(ValueError, match="does not fit"):
        crop_starts([clip], np.random.default_rng(0), 30, starts=[clip.num_frames - 29])
