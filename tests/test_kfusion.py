"""KFusion of Dual-Domain: modules, ablation variants, checkpoints, determinism, overfitting one clip."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from baselines import available_methods, build_method
from baselines.audio_frontends import FrontendUnavailable, build_frontend
from core.types import MethodInput
from baselines.kfusion import VARIANTS, KFusion, KFusionConfig
from baselines.kfusion.model import KFusionNet
from baselines.torch_method import TRAIN_STATE, landmarks_normalise, window_starts
from core.constants import MOUTH
from core.errors import CheckpointError
from core.types import Clip
from metrics.landmark import landmark_distance

FAST = {"epochs": 1, "batch_size": 2, "window_frames": 12, "d_model": 32, "heads": 2, "ff_dim": 64,
        "lstm_hidden": 16, "fusion_hidden": 16, "head_hidden": 16,
        "content_frontend_config": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "conv_dim": 16}}


@pytest.fixture(scope="session")
def clips(talkbench_home) -> list[Clip]:
    from bench.data.synthtalk import corpus

    return corpus.load_clips(corpus.build(size=2))


def _config(cls=KFusion, **over) -> KFusionConfig:
    return cls.Config.preset("tiny", **{**FAST, **over})


def test_registered_with_declared_inputs():
    names = set(available_methods())
    assert {"kfusion", "kfusion_no_kfusion", "kfusion_no_lstm", "kfusion_no_global", "kfusion_mlp_head",
            "kfusion_mlp_fusion"} <= names
    assert set(KFusion.ablations) == set(VARIANTS) - {"kfusion"}
    m = build_method("kfusion")
    assert m.inputs == {"audio", "identity_landmarks", "emotion"} and m.outputs == {"landmarks"}
    assert m.trainable
    paper = KFusionConfig.preset("paper")
    assert (paper.epochs, paper.lr, paper.lr_min, paper.head_hidden) == (200, 3e-4, 1e-6, 512)
    # the official code's torchaudio WAV2VEC2_BASE (pre-trained, not ASR fine-tuned), fed the raw waveform
    assert paper.content_frontend_config == {"pretrained": "facebook/wav2vec2-base", "freeze": "all",
                                             "normalize": False}
    # 1-s windows at the clips' fps, an epoch a pass over every window, no gradient clipping
    assert (paper.window_seconds, paper.epoch_mode, paper.grad_clip) == (1.0, "all_windows", 0.0)
    tiny = KFusionConfig.preset("tiny")
    assert (tiny.window_seconds, tiny.window_frames, tiny.epoch_mode, tiny.grad_clip) == (0.0, 24, "one_per_clip", 1.0)
    flags = {n: (c.Config.preset("paper").use_kfusion, c.Config.preset("tiny").use_lstm,
                 c.Config().use_global, c.Config.preset("tiny").head) for n, c in VARIANTS.items()}
    assert flags == {"kfusion": (True, True, True, "kan"), "kfusion_no_kfusion": (False, True, True, "kan"),
                     "kfusion_no_lstm": (True, False, True, "kan"), "kfusion_no_global": (True, True, False, "kan"),
                     "kfusion_mlp_head": (True, True, True, "mlp"), "kfusion_mlp_fusion": (False, True, True, "kan")}
    assert VARIANTS["kfusion_mlp_fusion"].Config.preset("paper").fusion_mlp
    with pytest.raises(ValueError, match="use_kfusion=False"):
        KFusionNet(_config(fusion_mlp=True))


def test_network_shapes_gradients_and_conditioning():
    torch.manual_seed(0)
    net = KFusionNet(_config(dropout=0.0))
    audio = torch.randn(2, 20 * 640) * 0.1
    ident = torch.randn(2, 68, 2) * 0.3
    emo = torch.tensor([0, 3])
    out = net(audio, ident, emo, 20)
    assert out.shape == (2, 20, 68, 2)
    out.square().mean().backward()
    no_grad = [n for n, p in net.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum())]
    # masked_spec_embed is read only by spec augment (off); the emotion rows of unused labels get none
    assert [n for n in no_grad if "masked_spec_embed" not in n and n != "emotion.weight"] == []
    assert net.emotion.weight.grad[[0, 3]].abs().sum() > 0 and net.emotion.weight.grad[1].abs().sum() == 0
    net.eval()
    with torch.no_grad():
        base = net(audio, ident, emo, 20)
        assert not torch.allclose(base, net(audio, ident * 1.2, emo, 20))  # identity guides the decoders
        net.emotion.weight[3] *= 2.0
        changed = net(audio, ident, emo, 20)
        assert torch.allclose(changed[0], base[0]) and not torch.allclose(changed[1], base[1])  # x' = w2v * w
        assert net(audio[:, :7 * 640], ident, emo, 7).shape == (2, 7, 68, 2)  # any length


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_each_variant_trains_and_predicts(name, clips, tmp_path):
    cls = VARIANTS[name]
    method = cls(_config(cls))
    method.fit(clips[:4], clips[4:5], seed=0, workdir=tmp_path)
    assert len(method.train_log) == 1 and np.isfinite(method.train_log[0]["train_loss"])
    assert "val_loss" in method.train_log[0]
    for clip in (clips[5], clips[6]):
        pred = method.predict(MethodInput.from_clip(clip, method.inputs))
        assert pred.landmarks.shape == clip.landmarks.shape and pred.landmarks.dtype == np.float32
        assert np.isfinite(pred.landmarks).all()
    net = method.model
    assert hasattr(net, "fuse_face") == (name not in ("kfusion_no_kfusion", "kfusion_mlp_fusion"))
    assert hasattr(net, "fuse_linear") == (name == "kfusion_no_kfusion")
    assert hasattr(net, "fuse_mlp") == (name == "kfusion_mlp_fusion")
    assert hasattr(net, "lstm_face") == (name != "kfusion_no_lstm")
    assert hasattr(net, "global_encoder") == (name != "kfusion_no_global")
    assert (net.head.__class__.__name__ == "KAN") == (name != "kfusion_mlp_head")


def test_checkpoint_round_trip_and_config_refusal(clips, tmp_path):
    method = KFusion(_config())
    method.fit(clips[:2], [], seed=0)
    path = tmp_path / "model.ckpt.npz"
    method.save(path)
    loaded = KFusion.load(path, _config())
    inp = MethodInput.from_clip(clips[3], method.inputs)
    np.testing.assert_array_equal(method.predict(inp).landmarks, loaded.predict(inp).landmarks)
    with pytest.raises(CheckpointError, match="mouth_weight"):
        KFusion.load(path, _config(mouth_weight=1.0))
    with pytest.raises(CheckpointError, match="kfusion_mlp_head"):
        VARIANTS["kfusion_mlp_head"].load(path)


def test_same_seed_same_weights_bitwise(clips):
    states = []
    for seed in (1, 1, 2):
        method = KFusion(_config(epochs=2))
        method.fit(clips[:4], [], seed=seed)
        states.append(method.state())
    assert all(np.array_equal(states[0][k], states[1][k]) for k in states[0])
    assert not all(np.array_equal(states[0][k], states[2][k]) for k in states[0])


def test_resume_after_interrupt(clips, tmp_path):
    full = KFusion(_config(epochs=3))
    full.fit(clips[:4], clips[4:5], seed=0, workdir=tmp_path / "a")

    def interrupt(epoch, record):
        if epoch == 1:
            raise KeyboardInterrupt

    part = KFusion(_config(epochs=3))
    part.on_epoch_end = interrupt
    with pytest.raises(KeyboardInterrupt):
        part.fit(clips[:4], clips[4:5], seed=0, workdir=tmp_path / "b")
    assert (tmp_path / "b" / TRAIN_STATE).exists()
    resumed = KFusion(_config(epochs=3))
    resumed.fit(clips[:4], clips[4:5], seed=0, workdir=tmp_path / "b")
    a, b = full.state(), resumed.state()
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_overfits_one_clip(clips):
    """A few hundred steps on one clip bring the mouth error far below a pixel."""
    clip = clips[0]
    cfg = _config(epochs=250, batch_size=1, window_frames=1000, lr=3e-3, lr_min=1e-4, dropout=0.0, weight_decay=0.0,
                  d_model=32, head_hidden=32, fusion_hidden=16)
    method = KFusion(cfg)
    method.fit([clip], [], seed=0)
    pred = method.predict(MethodInput.from_clip(clip, method.inputs)).landmarks
    mouth = list(MOUTH)
    m_ld = landmark_distance(pred[:, mouth], clip.landmarks[:, mouth])
    static = landmark_distance(np.repeat(clip.landmarks[:1, mouth], clip.num_frames, 0), clip.landmarks[:, mouth])
    assert m_ld < 0.5, (m_ld, static)
    assert static > 2.0  # the clip does move: the test is not trivially passed


def test_paper_preset_needs_its_weights_and_builds_from_a_local_copy(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TALKBENCH_HOME", str(tmp_path))  # no $TALKBENCH_HOME/weights/hf copy either
    with pytest.raises(FrontendUnavailable, match="'facebook/wav2vec2-base'"):
        build_method("kfusion", "paper").build_model()
    # the paper architecture around a stand-in pretrained encoder saved to a folder
    torch.manual_seed(0)
    stand_in = build_frontend("wav2vec2", {"hidden_size": 48, "num_layers": 2, "num_heads": 4})
    stand_in.encoder.save_pretrained(tmp_path / "w2v")
    method = build_method("kfusion", "paper", {"content_frontend_config": {"pretrained": str(tmp_path / "w2v"),
                                                                           "freeze": "all", "normalize": False}})
    net = method.build_model()
    assert not any(p.requires_grad for p in net.content_frontend.parameters())
    assert net.content_frontend.normalize_input is False
    assert net.head.widths == [68, 512, 68] and net.cfg.d_model == 256
    out = net(torch.randn(1, 25 * 640), torch.zeros(1, 68, 2), torch.tensor([7]), 25)
    assert out.shape == (1, 25, 68, 2)


def test_targets_are_normalised_displacements(clips):
    method = KFusion(_config())
    batch = method.make_batch(clips[:2], np.random.default_rng(0), "cpu")
    clip = clips[0]
    ident = clip.landmarks[0]
    # the identity frame's own displacement is zero; others are in units of jaw width x target_scale
    w = batch["target"].shape[1]
    assert batch["target"].shape == (2, w, 68, 2) and batch["audio"].shape == (2, w * 640)
    np.testing.assert_allclose(batch["identity"][0].numpy(), landmarks_normalise(ident, ident), atol=1e-6)
    with pytest.raises(ValueError, match="16 kHz"):
        inp = MethodInput.from_clip(clip, method.inputs)
        inp.sample_rate = 22050
        method.model = method.build_model()
        method.predict(inp)


def _at_30fps(clip: Clip) -> Clip:
    """The clip as if filmed at 30 fps (MEAD's rate): same landmarks, 16000 / 30 audio samples a frame."""
    return dataclasses.replace(clip, fps=30.0, audio=clip.audio[:int(round(clip.num_frames * 16000 / 30))])


def test_paper_window_is_one_second_at_the_clips_fps(clips):
    """The paper's 1-s clips: 30 frames (16000 samples) at MEAD's 30 fps, 25 at synthtalk's 25 fps;
    an "all_windows" epoch visits every 1-s window of every training clip once."""
    paper = build_method("kfusion", "paper")
    assert paper.window_length(30) == 30 and paper.window_length(25) == 25
    train = [_at_30fps(c) for c in clips[:2]]
    method = KFusion(_config(window_seconds=1.0, epoch_mode="all_windows"))
    shapes, visits = set(), []
    inner = method.make_batch

    def spy(batch_clips, rng, device, starts=None):
        batch = inner(batch_clips, rng, device, starts)
        shapes.add((batch["target"].shape[1], batch["audio"].shape[1]))
        visits.extend((c.id, s) for c, s in zip(batch_clips, starts))
        return batch

    method.make_batch = spy
    method.fit(train, [], seed=0)
    assert shapes == {(30, 16000)}
    assert sorted(visits) == sorted((c.id, s) for c in train for s in window_starts(c.num_frames, 30, 30))
    assert method.train_log[0]["windows"] == len(visits)
    pred = method.predict(MethodInput.from_clip(train[0], method.inputs))  # 533.33 samples a frame
    assert pred.landmarks.shape == train[0].landmarks.shape and np.isfinite(pred.landmarks).all()
