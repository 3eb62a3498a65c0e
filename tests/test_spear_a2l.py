"""SPEAR audio-to-landmark: modules, Table 3 variants, checkpoints, determinism, overfitting one clip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from baselines import available_methods, build_method
from baselines.audio_frontends import FrontendUnavailable, build_frontend
from core.types import MethodInput
from baselines.spear_a2l import POINTS, SpearA2LConfig, SpearA2LMethod, triangular_weights, window_starts
from baselines.spear_a2l.model import (AudioFeatureEncoder, LandmarkSetEncoder, PoseEncoder, SpearA2L,
                                       spear_loss)
from core.errors import CheckpointError
from core.constants import JAW, MOUTH
from core.types import Clip
from method_checks import assert_epoch_visits_every_window, assert_same_seed_same_state, overfit_error

VARIANTS = ("spear_a2l", "spear_a2l_mfcc", "spear_a2l_wav2vec2_conformer", "spear_a2l_unispeech")
FAST = {"epochs": 1, "batch_size": 2, "window_frames": 12, "d_model": 32, "heads": 2, "layers": 1, "ff": 64,
        "audio_channels": (8, 16), "landmark_channels": (8, 16), "fe_hidden": 16, "fe_num_layers": 3,
        "fe_heads": 2, "fe_conv_dim": 8}


# tiny models run fastest on one intra-op thread (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="session")
def clips(talkbench_home) -> list[Clip]:
    from bench.data.synthtalk import corpus

    return corpus.load_clips(corpus.build(size=2))


def _method(name: str = "spear_a2l", **over):
    return build_method(name, "tiny", {**FAST, **over})


def _grads_everywhere(module: torch.nn.Module) -> list[str]:
    """Parameters without a finite, non-zero gradient (spec-augment's mask embedding is unused: off)."""
    return [n for n, p in module.named_parameters()
            if p.requires_grad and "masked_spec_embed" not in n
            and (p.grad is None or not torch.isfinite(p.grad).all() or not p.grad.abs().sum())]


# ----------------------------------------------------------------------------- modules

def test_audio_feature_encoder_stacks_layers_as_channels():
    torch.manual_seed(0)
    enc = AudioFeatureEncoder(num_layers=3, hidden=40, channels=(8, 16, 32), d_model=24)
    x = torch.randn(2, 7, 3 * 40, requires_grad=True)
    out = enc(x)
    assert out.shape == (2, 7, 24)
    out.square().sum().backward()
    assert not _grads_everywhere(enc)
    # Frames are independent: a change in frame 3's features moves frame 3 only.
    y = x.detach().clone()
    y[:, 3] += 1.0
    diff = (enc(y) - enc(x.detach())).abs().sum(dim=(0, 2))
    assert diff[3] > 0 and torch.all(diff[torch.arange(7) != 3] == 0)
    with pytest.raises(ValueError, match="expected 3 x 40"):
        enc(torch.randn(1, 2, 100))


def test_landmark_and_pose_encoders_shapes_and_gradients():
    torch.manual_seed(0)
    lm = LandmarkSetEncoder((8, 16), d_model=24)
    pts = torch.randn(2, 3, 68, 2)
    out = lm(pts)
    assert out.shape == (2, 3, 24)
    out.sum().backward()
    assert not _grads_everywhere(lm)
    pose = PoseEncoder(24, 6, temporal_blocks=2)
    p = torch.randn(2, 9, 6)
    out = pose(p)
    assert out.shape == (2, 9, 24)
    out.square().sum().backward()
    assert not _grads_everywhere(pose)


def test_spear_network_shapes_gradients_and_residual_on_reference():
    torch.manual_seed(0)
    frontend = build_frontend("hubert", {"layers": [1, 2, 3], "hidden_size": 16, "num_layers": 3, "num_heads": 2,
                                         "conv_dim": 8})
    net = SpearA2L(frontend, frontend_layers=3, points=POINTS, d_model=32, heads=2, layers=1, ff=64, dropout=0.0,
                   audio_channels=(8, 16), landmark_channels=(8, 16), pose_blocks=1)
    audio = torch.randn(2, 10 * 640) * 0.1
    pose = torch.randn(2, 10, 6)
    ref = torch.randn(2, 68, 2) * 0.3
    out = net(audio, pose, ref)
    assert out.shape == (2, 10, len(POINTS), 2)
    spear_loss(out, torch.zeros_like(out))[0].backward()
    assert not _grads_everywhere(net)
    # The output is a displacement on the reference's own points (small head initialisation).
    assert torch.allclose(out, ref[:, None, list(POINTS)].expand_as(out), atol=0.05)
    # Pose conditions the output.
    net.eval()
    with torch.no_grad():
        assert not torch.allclose(net(audio, pose, ref), net(audio, pose + 1.0, ref))


def test_loss_is_mse_plus_velocity():
    target = torch.randn(2, 6, 37, 2)
    mse, vel = spear_loss(target, target)
    assert mse == 0 and vel == 0
    shifted = target + 0.1  # a constant offset: position error, no velocity error
    mse, vel = spear_loss(shifted, target)
    assert torch.isclose(mse, torch.tensor(37 * 2 * 0.01)) and torch.isclose(vel, torch.tensor(0.0), atol=1e-7)
    jitter = target.clone()
    jitter[:, 3] += 0.1  # one frame off: two velocity errors of 0.1 per coordinate
    _, vel = spear_loss(jitter, target)
    assert torch.isclose(vel, torch.tensor(2 * 2 * 0.01 / 5), atol=1e-6)


def test_windows_cover_every_frame():
    assert window_starts(10, 32, 16) == [0]
    assert window_starts(70, 32, 16) == [0, 16, 32, 38]
    for n in (33, 64, 97):
        starts = window_starts(n, 32, 16)
        covered = np.zeros(n, bool)
        for s in starts:
            covered[s:s + 32] = True
        assert covered.all() and starts[-1] == n - 32
    w = triangular_weights(6)
    assert w.tolist() == [1, 2, 3, 3, 2, 1]


# ----------------------------------------------------------------------------- method

def test_registered_points_inputs_and_presets():
    assert set(VARIANTS) <= set(available_methods())
    assert POINTS == tuple(JAW) + tuple(MOUTH) and len(POINTS) == 37
    m = build_method("spear_a2l")
    assert m.inputs == {"audio", "identity_landmarks", "pose"} and m.outputs == {"landmarks"} and m.trainable
    paper = SpearA2LConfig.preset("paper")
    assert (paper.pretrained, tuple(paper.frontend_layers), paper.epochs, paper.batch_size, paper.lr) == \
        ("facebook/hubert-large-ls960-ft", (6, 12, 24), 200, 32, 1e-4)
    # an epoch is a pass over every 25-frame window; no gradient clipping (the paper has none)
    for n in VARIANTS:
        p, t = build_method(n, "paper").config, build_method(n).config
        assert (p.epoch_mode, p.window_frames, p.window_seconds, p.grad_clip) == ("all_windows", 25, 0.0, 0.0)
        assert (t.epoch_mode, t.grad_clip) == ("one_per_clip", 1.0)
    kinds = {n: build_method(n).config.frontend for n in VARIANTS}
    assert kinds == {"spear_a2l": "hubert", "spear_a2l_mfcc": "mfcc",
                     "spear_a2l_wav2vec2_conformer": "wav2vec2_conformer", "spear_a2l_unispeech": "unispeech"}
    for n in VARIANTS:
        if n != "spear_a2l_mfcc":
            assert build_method(n, "paper").config.pretrained  # a real pretrained encoder at paper scale


@pytest.mark.parametrize("name,model", [("spear_a2l", "facebook/hubert-large-ls960-ft"),
                                        ("spear_a2l_wav2vec2_conformer", "facebook/wav2vec2-conformer-rope-large-960h-ft"),
                                        ("spear_a2l_unispeech", "microsoft/unispeech-large-1500h-cv")])
def test_paper_preset_needs_its_weights(name, model, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TALKBENCH_HOME", str(tmp_path))
    with pytest.raises(FrontendUnavailable, match=model):
        build_method(name, "paper").build_model()


def test_paper_architecture_around_a_local_24_layer_encoder(tmp_path):
    """The paper preset's network on a stand-in 24-layer HuBERT saved to a folder: layers 6/12/24, frozen."""
    torch.manual_seed(0)
    stand_in = build_frontend("hubert", {"hidden_size": 16, "num_layers": 24, "num_heads": 2, "conv_dim": 8})
    stand_in.encoder.save_pretrained(tmp_path / "hubert")
    m = build_method("spear_a2l", "paper", {"pretrained": str(tmp_path / "hubert")})
    model = m.build_model()
    net = model.net
    assert net.frontend.layers == [6, 12, 24] and net.audio_encoder.num_layers == 3
    assert not any(p.requires_grad for p in net.frontend.parameters())
    assert net.transformer.layers[0].linear1.out_features == 1024 and len(net.transformer.layers) == 4
    out = model(torch.randn(2, 5 * 640) * 0.1, torch.zeros(2, 5, 6), torch.randn(2, 68, 2) * 0.3)
    assert out.shape == (2, 5, 37, 2)


@pytest.mark.parametrize("name", VARIANTS)
def test_each_variant_trains_a_step_and_predicts(name, clips):
    m = _method(name)
    m.fit(clips[:2], [], seed=0)
    assert len(m.train_log) == 1 and np.isfinite(m.train_log[0]["train_loss"])
    clip = clips[0]
    pred = m.predict(MethodInput.from_clip(clip, m.inputs))
    assert pred.points == POINTS
    assert pred.landmarks.shape == (clip.num_frames, len(POINTS), 2) and pred.landmarks.dtype == np.float32
    assert np.isfinite(pred.landmarks).all()


def test_checkpoint_round_trip_and_config_refusal(clips, tmp_path):
    m = _method()
    m.fit(clips[:2], [], seed=0)
    path = tmp_path / "spear.ckpt.npz"
    m.save(path)
    loaded = SpearA2LMethod.load(path, m.config)
    inp = MethodInput.from_clip(clips[1], m.inputs)
    np.testing.assert_array_equal(loaded.predict(inp).landmarks, m.predict(inp).landmarks)
    np.testing.assert_array_equal(loaded._pose_scale, m._pose_scale)
    other = SpearA2LConfig.preset("tiny", **{**FAST, "d_model": 16})
    with pytest.raises(CheckpointError, match="d_model"):
        SpearA2LMethod.load(path, other)


def test_same_seed_same_state_bitwise(clips):
    assert_same_seed_same_state(_method, clips[:2], seed=3)


def test_all_windows_epoch_passes_over_every_window(clips):
    """The paper preset's epoch: every non-overlapping window once, cut at the trainer's starts."""
    m = _method(epoch_mode="all_windows")
    assert_epoch_visits_every_window(m, clips, 12)
    with pytest.raises(ValueError, match="does not fit"):
        m.make_batch(clips[:1], None, "cpu", starts=[clips[0].num_frames - 5])


def test_overfits_one_clip(clips):
    """One clip, whole-clip windows, no dropout: the fit must reach sub-pixel error on its 37 points."""
    clip = clips[0]
    err, static = overfit_error("spear_a2l", {"epochs": 150, "lr": 3e-3, "lr_min": 1e-4, "batch_size": 1,
                                           "window_frames": clip.num_frames, "dropout": 0.0}, clip, POINTS)
    assert err < 0.5, (err, static)
