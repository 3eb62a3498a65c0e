"""Gaussian-landmark NeRF stage 1: attention bias, periodic encoding, zero-init start, KV-cached
decoding, the head camera, checkpoints, determinism, 2D fallback, overfitting one clip."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from baselines import available_methods, build_method
from baselines.audio_frontends import FrontendUnavailable, build_frontend
from core.types import MethodInput
from baselines.gnerf_a2l import POINTS, GNerfA2LConfig, GNerfA2LMethod
from baselines.gnerf_a2l.camera import HeadCamera, fit_camera, rotation_matrices
from baselines.gnerf_a2l.model import (AlignedCrossAttention, BiasedSelfAttention, DecoderLayer, GNerfA2L,
                                       LandmarkEncoder, MLPLandmarkEncoder, PeriodicPositionalEncoding,
                                       alibi_slopes, biased_causal_bias, smooth_l1_loss)
from core.errors import CheckpointError
from core.constants import JAW, MOUTH
from core.types import Clip
from method_checks import assert_epoch_visits_every_window, assert_same_seed_same_state, overfit_error

FAST = {"epochs": 1, "batch_size": 2, "window_frames": 12, "d_model": 16, "heads": 2, "layers": 1, "ff": 32,
        "lm_channels": 16, "lm_heads": 2, "lm_ff": 32, "fe_hidden": 16, "fe_num_layers": 1, "fe_heads": 2,
        "fe_conv_dim": 8}


# tiny models run fastest on one intra-op thread (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="session")
def clips(talkbench_home) -> list[Clip]:
    from bench.data.synthtalk import corpus

    return corpus.load_clips(corpus.build(size=2))


def _net(dropout: float = 0.0, period: int = 5, **over) -> GNerfA2L:
    frontend = build_frontend("wav2vec2", {"hidden_size": 16, "num_layers": 1, "num_heads": 2, "conv_dim": 8})
    kw = dict(points=len(POINTS), d_model=16, heads=4, layers=2, ff=32, dropout=dropout, period=period,
              lm_channels=16, lm_heads=2, lm_layers=1, lm_ff=32, lm_dropout=dropout)
    return GNerfA2L(frontend, **{**kw, **over})


def _method(**over) -> GNerfA2LMethod:
    return build_method("gnerf_a2l", "tiny", {**FAST, **over})


def _no_grad_params(module: torch.nn.Module) -> list[str]:
    return [n for n, p in module.named_parameters()
            if p.requires_grad and "masked_spec_embed" not in n
            and (p.grad is None or not torch.isfinite(p.grad).all() or not p.grad.abs().sum())]


# ----------------------------------------------------------------------------- attention bias and PPE

def test_alibi_slopes():
    assert torch.allclose(alibi_slopes(4), torch.tensor([2 ** -2, 2 ** -4, 2 ** -6, 2 ** -8]))
    assert torch.allclose(alibi_slopes(8), torch.tensor([2.0 ** -(k + 1) for k in range(8)]))
    six = alibi_slopes(6)  # not a power of two: the 4-head slopes, then every other 8-head slope
    assert torch.allclose(six, torch.tensor([2 ** -2, 2 ** -4, 2 ** -6, 2 ** -8, 2 ** -1, 2 ** -3]))


def test_biased_causal_bias_values():
    heads, length, period = 4, 9, 3
    bias = biased_causal_bias(heads, length, period)
    slopes = alibi_slopes(heads)
    assert bias.shape == (heads, length, length)
    for i in range(length):
        for j in range(length):
            if j > i:
                assert torch.all(torch.isinf(bias[:, i, j]) & (bias[:, i, j] < 0))
            else:
                assert torch.allclose(bias[:, i, j], -slopes * ((i - j) // period))
    # A decoding step's row equals the corresponding row of the full bias.
    row = biased_causal_bias(heads, 7, period, query_start=6, queries=1)
    assert torch.equal(row, bias[:, 6:7, :7])
    # Any length works (FaceFormer's fixed table stops at 600 frames).
    assert biased_causal_bias(2, 700, 25).shape == (2, 700, 700)


def test_periodic_positional_encoding_is_periodic():
    ppe = PeriodicPositionalEncoding(16, period=25, dropout=0.0)
    enc = ppe.encoding(0, 100)
    assert torch.equal(enc[:25], enc[25:50]) and torch.equal(enc[:25], enc[75:100])
    assert not torch.equal(enc[0], enc[1])
    assert torch.equal(ppe.encoding(37, 1)[0], enc[12])
    x = torch.zeros(1, 60, 16)
    assert torch.equal(ppe(x)[0], ppe.encoding(0, 60))


def test_attention_cache_matches_full_pass():
    torch.manual_seed(0)
    attn = BiasedSelfAttention(16, 4, dropout=0.0).eval()
    x = torch.randn(2, 6, 16)
    full, _ = attn(x, biased_causal_bias(4, 6, 2))
    cache, steps = None, []
    for i in range(6):
        out, cache = attn(x[:, i:i + 1], biased_causal_bias(4, i + 1, 2, query_start=i, queries=1), cache)
        steps.append(out)
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-6)


def test_future_inputs_cannot_change_the_past():
    torch.manual_seed(0)
    net = _net().eval()
    audio = torch.randn(2, 12 * 640) * 0.1
    ident = torch.randn(2, len(POINTS), 3) * 0.3
    target = torch.randn(2, 12, len(POINTS), 3) * 0.3
    net.output.weight.data.normal_(std=0.1)  # a non-zero head, so the outputs depend on the inputs
    with torch.no_grad():
        base = net(audio, ident, target)
        changed = target.clone()
        changed[:, 7] += 1.0  # frame 7 is the decoder's input for frame 8
        moved = net(audio, ident, changed)
    assert torch.equal(base[:, :8], moved[:, :8])
    assert not torch.allclose(base[:, 8:], moved[:, 8:])
    # Also inside one decoder layer: a perturbed future token leaves earlier outputs unchanged.
    layer = DecoderLayer(16, 4, 32, dropout=0.0).eval()
    x, a = torch.randn(1, 10, 16), torch.randn(1, 10, 16)
    bias = biased_causal_bias(4, 10, 3)
    y = x.clone()
    y[:, 6] += 5.0
    with torch.no_grad():
        assert torch.equal(layer(x, a, bias)[0][:, :6], layer(y, a, bias)[0][:, :6])


# ----------------------------------------------------------------------------- network

def test_modules_shapes_and_gradients():
    torch.manual_seed(0)
    enc = LandmarkEncoder(len(POINTS), 24, channels=16, heads=2, layers=1, ff=32, dropout=0.0)
    out = enc(torch.randn(2, 5, len(POINTS), 3))
    assert out.shape == (2, 5, 24)
    out.square().sum().backward()
    assert not _no_grad_params(enc)
    net = _net()
    net.output.weight.data.normal_(std=0.01)
    audio = torch.randn(2, 10 * 640) * 0.1
    ident = torch.randn(2, len(POINTS), 3) * 0.3
    target = torch.randn(2, 10, len(POINTS), 3) * 0.3
    pred = net(audio, ident, target)
    assert pred.shape == (2, 10, len(POINTS), 3)
    smooth_l1_loss(pred, target).backward()
    assert not _no_grad_params(net)


def test_zero_initialised_output_gives_identity():
    torch.manual_seed(0)
    net = _net(dropout=0.1)
    assert torch.count_nonzero(net.output.weight) == 0 and torch.count_nonzero(net.output.bias) == 0
    audio = torch.randn(2, 8 * 640) * 0.1
    ident = torch.randn(2, len(POINTS), 3) * 0.3
    target = torch.randn(2, 8, len(POINTS), 3)
    out = net(audio, ident, target)  # training mode, dropout on: still exactly the identity
    assert torch.equal(out, ident[:, None].expand_as(out))
    net.eval()
    gen = net.generate(audio, ident, 8)
    assert torch.equal(gen, ident[:, None].expand_as(gen))


def test_generate_matches_teacher_forcing_on_its_own_outputs():
    """The cached autoregressive decoder computes exactly what a full pass over its outputs computes."""
    torch.manual_seed(0)
    net = _net().eval()
    for p in net.output.parameters():
        p.data.normal_(std=0.05)
    audio = torch.randn(3, 11 * 640) * 0.1
    ident = torch.randn(3, len(POINTS), 3) * 0.3
    with torch.no_grad():
        gen = net.generate(audio, ident, 11)
        forced = net(audio, ident, gen)
        single = net.generate(audio[1:2], ident[1:2], 11)  # batching does not mix clips
    assert torch.allclose(gen, forced, atol=1e-5)
    assert torch.allclose(gen[1:2], single, atol=1e-5)


def test_aligned_cross_attention_is_one_hot():
    """The alignment bias lets frame i see audio frame i only, so the block is exactly the value and
    output projections of that frame (why the paper replaces it with a linear layer)."""
    torch.manual_seed(0)
    block = AlignedCrossAttention(16, 4, dropout=0.0).eval()
    x, audio = torch.randn(2, 9, 16), torch.randn(2, 9, 16)
    attn = block.attn
    w_v, b_v = attn.in_proj_weight[32:], attn.in_proj_bias[32:]
    with torch.no_grad():
        out = block(x, audio)
        expected = attn.out_proj(audio @ w_v.T + b_v)
        moved = audio.clone()
        moved[:, 4] += 3.0
        changed = block(x, moved)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(changed[:, :4], out[:, :4]) and torch.equal(changed[:, 5:], out[:, 5:])
    assert not torch.allclose(changed[:, 4], out[:, 4])
    with pytest.raises(ValueError, match="one audio frame per token"):
        block(x, audio[:, :5])


@pytest.mark.parametrize("over", [{"audio_attention": "aligned"},
                                  {"audio_attention": "aligned", "landmark_encoder": "mlp"}])
def test_table_ii_variants_decode_like_they_train(over):
    torch.manual_seed(0)
    net = _net(**over).eval()
    if over.get("landmark_encoder") == "mlp":
        assert isinstance(net.landmark_encoder, MLPLandmarkEncoder)
    for p in net.output.parameters():
        p.data.normal_(std=0.05)
    audio = torch.randn(2, 7 * 640) * 0.1
    ident = torch.randn(2, len(POINTS), 3) * 0.3
    with torch.no_grad():
        gen = net.generate(audio, ident, 7)
        forced = net(audio, ident, gen)
    assert torch.allclose(gen, forced, atol=1e-5)
    net.train()
    target = torch.randn(2, 7, len(POINTS), 3) * 0.3
    smooth_l1_loss(net(audio, ident, target), target).backward()
    assert not _no_grad_params(net)


def test_table_ii_rows_are_registered_ablations():
    assert GNerfA2LMethod.ablations == ("gnerf_a2l_align", "gnerf_a2l_me")
    base = build_method("gnerf_a2l", "tiny")
    align, me = build_method("gnerf_a2l_align", "tiny"), build_method("gnerf_a2l_me", "tiny")
    assert (base.config.landmark_encoder, base.config.audio_attention) == ("transformer", "linear")
    assert (align.config.landmark_encoder, align.config.audio_attention) == ("transformer", "aligned")
    assert (me.config.landmark_encoder, me.config.audio_attention) == ("mlp", "aligned")
    assert base.config.resample == "before" and build_method("gnerf_a2l", "paper").config.resample == "before"
    assert {"gnerf_a2l_align", "gnerf_a2l_me"} <= set(available_methods())


# ----------------------------------------------------------------------------- camera

def test_rotation_convention():
    r = rotation_matrices(np.array([10.0]), np.array([0.0]), np.array([0.0]))[0]
    nose = r @ np.array([0.0, 0.0, 20.0])  # positive yaw: the nose (towards the camera) goes image-right
    assert nose[0] > 0
    r = rotation_matrices(np.array([0.0]), np.array([10.0]), np.array([0.0]))[0]
    chin = r @ np.array([0.0, 100.0, 0.0])  # positive pitch tips the chin (y down) away from the camera
    assert chin[2] < 0
    assert np.allclose(r @ r.T, np.eye(3))


def test_camera_fit_reproduces_the_projection_and_lift_inverts_it(clips):
    train = clips[:6]
    camera, rms = fit_camera([c.landmarks3d for c in train], [c.pose for c in train], [c.landmarks for c in train])
    assert rms < 1e-3
    clip = clips[10]  # another speaker
    assert np.abs(camera.project(clip.landmarks3d, clip.pose) - clip.landmarks).max() < 1e-2
    depth = clip.landmarks3d[0, :, 2] + 3.0  # a wrong depth still reproduces the pixels exactly
    lifted = camera.lift(clip.landmarks[0], clip.pose[0], depth)
    assert np.allclose(lifted[:, 2], depth)
    assert np.allclose(camera.project(lifted[None], clip.pose[:1])[0], clip.landmarks[0], atol=1e-6)
    assert np.allclose(HeadCamera.from_array(camera.to_array()).to_array(), camera.to_array())


# ----------------------------------------------------------------------------- method

def test_registered_points_and_presets():
    assert "gnerf_a2l" in available_methods()
    assert POINTS == tuple(JAW) + tuple(MOUTH) and len(POINTS) == 37
    m = build_method("gnerf_a2l")
    assert m.inputs == {"audio", "identity_landmarks", "pose"} and m.outputs == {"landmarks"}
    paper = GNerfA2LConfig.preset("paper")
    assert (paper.pretrained, paper.d_model, paper.heads, paper.ff, paper.layers, paper.period, paper.lr,
            paper.window_frames) == ("facebook/wav2vec2-base-960h", 64, 4, 512, 2, 25, 1e-4, 200)
    # the paper's 200-frame groups, each visited once per epoch (public code); no gradient clipping
    assert (paper.epoch_mode, paper.grad_clip, paper.epochs) == ("all_windows", 0.0, 30)
    tiny = GNerfA2LConfig.preset("tiny")
    assert (tiny.epoch_mode, tiny.grad_clip) == ("one_per_clip", 1.0)


def test_paper_preset_needs_wav2vec2_and_builds_from_a_local_copy(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TALKBENCH_HOME", str(tmp_path))
    with pytest.raises(FrontendUnavailable, match="facebook/wav2vec2-base-960h"):
        build_method("gnerf_a2l", "paper").build_model()
    torch.manual_seed(0)
    stand_in = build_frontend("wav2vec2", {"hidden_size": 16, "num_layers": 1, "num_heads": 2, "conv_dim": 8})
    stand_in.encoder.save_pretrained(tmp_path / "w2v")
    net = build_method("gnerf_a2l", "paper", {"pretrained": str(tmp_path / "w2v")}).build_model().net
    assert not any(p.requires_grad for p in net.frontend.encoder.feature_extractor.parameters())
    assert any(p.requires_grad for p in net.frontend.encoder.encoder.parameters())  # transformer fine-tuned
    assert net.landmark_encoder.conv.out_channels == 512 and net.landmark_encoder.conv.dilation == (2,)
    assert len(net.layers) == 2 and net.layers[0].ff[0].out_features == 512 and net.output.out_features == 111


def test_trains_a_step_and_predicts_projected_points(clips):
    m = _method()
    m.fit(clips[:3], [], seed=0)
    assert m.geometry.space3d and m.camera_rms < 1e-3
    assert np.isfinite(m.train_log[0]["train_loss"])
    clip = clips[12]
    pred = m.predict(MethodInput.from_clip(clip, m.inputs))
    assert pred.points == POINTS
    assert pred.landmarks.shape == (clip.num_frames, 37, 2) and pred.landmarks.dtype == np.float32
    assert np.isfinite(pred.landmarks).all()


def test_untrained_prediction_is_the_identity_moved_by_the_pose(clips):
    """Zero-initialised output: the prediction is the lifted identity projected with every frame's pose."""
    m = _method(epochs=1, lr=0.0, lr_min=0.0)
    m.fit(clips[:3], [], seed=0)
    clip = clips[12]
    pred = m.predict(MethodInput.from_clip(clip, m.inputs)).landmarks
    np.testing.assert_allclose(pred[0], clip.landmarks[0, list(POINTS)], atol=1e-3)
    lifted = m.geometry.lift(clip.landmarks[0], clip.pose[0])
    expected = m.geometry.camera.project(np.repeat(lifted[None], clip.num_frames, 0), clip.pose)
    np.testing.assert_allclose(pred, expected, atol=1e-3)


def test_without_3d_ground_truth_it_predicts_2d(clips):
    flat = [dataclasses.replace(c, landmarks3d=None) for c in clips[:3]]
    m = _method(epochs=2)
    m.fit(flat, [], seed=0)
    assert not m.geometry.space3d
    clip = dataclasses.replace(clips[12], landmarks3d=None, pose=None)
    pred = m.predict(MethodInput.from_clip(clip, m.inputs))
    assert pred.landmarks.shape == (clip.num_frames, 37, 2) and np.isfinite(pred.landmarks).all()
    with pytest.raises(ValueError, match="3d"):
        _method(space="3d").fit(flat, [], seed=0)


def test_checkpoint_round_trip_and_config_refusal(clips, tmp_path):
    m = _method()
    m.fit(clips[:3], [], seed=0)
    path = tmp_path / "gnerf.ckpt.npz"
    m.save(path)
    loaded = GNerfA2LMethod.load(path, m.config)
    assert loaded.geometry.space3d
    np.testing.assert_allclose(loaded.geometry.camera.to_array(), m.geometry.camera.to_array(), rtol=1e-6)
    inp = MethodInput.from_clip(clips[12], m.inputs)
    np.testing.assert_allclose(loaded.predict(inp).landmarks, m.predict(inp).landmarks, atol=1e-3)
    with pytest.raises(CheckpointError, match="period"):
        GNerfA2LMethod.load(path, GNerfA2LConfig.preset("tiny", **{**FAST, "period": 30}))


def test_same_seed_same_state_bitwise(clips):
    assert_same_seed_same_state(_method, clips[:3], seed=5)


def test_all_windows_epoch_passes_over_every_window(clips):
    """The paper preset's epoch (the paper's 200-frame groups, here 12): every window once."""
    assert_epoch_visits_every_window(_method(epoch_mode="all_windows"), clips, 12)


def test_overfits_one_clip(clips):
    """One clip, teacher-forced training, autoregressive prediction: sub-pixel error on its 37 points."""
    clip = clips[0]
    err, static = overfit_error("gnerf_a2l", {"epochs": 120, "lr": 3e-3, "lr_min": 1e-4, "batch_size": 1,
                                           "window_frames": clip.num_frames, "dropout": 0.0}, clip, POINTS)
    assert err < 0.5, (err, static)
