"""TCSAN + Audio2AU: shapes, Audio2AU pre-training, TCSAN's receptive field, one-clip overfit,
checkpoints, determinism, the paper preset at batch 1, the registered variants."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from baselines import available_methods, build_method
from baselines.tcsan import TCSAN, VARIANTS, au_labels, mfcc_windows
from baselines.tcsan.model import (Audio2AU, AUClassifier, AudioEncoder, Fusion, IdentityEncoder, TCSANNet,
                                   TemporalConvNet, class_weights, receptive_field)
from core.types import Clip, MethodInput
from method_checks import assert_same_seed_same_state

# small and fast: every part present (Audio2AU, AU loss, perceptual on random VGG at 28 px)
FAST = {"epochs": 2, "batch_size": 2, "window_frames": 4, "a2au_epochs": 2, "clf_epochs": 1, "per_size": 28,
        "fusion_dim": 32, "id_width": 4, "audio_width": 4, "dec_width": 4, "au_width": 4, "a2au_width": 4,
        "a2au_hidden": 8, "tcsan_depth": 2, "pretrain_batch": 64}


# tiny models run fastest on one intra-op thread (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="session")
def clips(talkbench_home) -> list[Clip]:
    from bench.data.synthtalk import corpus

    out = corpus.load_clips(corpus.build(size=1))
    return [c for c in out if c.num_frames <= 80][:3]


def test_registered_variants_and_ablations():
    names = set(available_methods())
    assert set(VARIANTS) <= names
    assert set(TCSAN.ablations) == set(VARIANTS) - {"tcsan_full"}
    assert build_method("tcsan").config.use_audio2au is False
    assert build_method("tcsan_lrec").config.use_per is False


def test_shapes():
    torch.manual_seed(0)
    f_id, skips = IdentityEncoder(4)(torch.rand(2, 3, 112, 112))
    assert f_id.shape == (2, 512) and [s.shape[-1] for s in skips] == [56, 28, 14, 7]
    assert AudioEncoder(4)(torch.randn(6, 12, 28)).shape == (6, 512)
    a2au = Audio2AU(4, 8)
    assert a2au.features(torch.randn(6, 12, 28)).shape == (6, 320) and a2au(torch.randn(6, 12, 28)).shape == (6, 5)
    assert AUClassifier(4)(torch.rand(3, 3, 112, 112)).shape == (3, 5)
    cfg = build_method("tcsan_full", "tiny", FAST).config
    net = TCSANNet(cfg)
    assert net.fusion.proj.in_features == 1344
    out = net(torch.rand(2, 3, 112, 112), torch.randn(2, 5, 12, 28))
    assert out.shape == (2, 5, 3, 112, 112) and 0 <= out.min() and out.max() <= 1
    net.eval()
    ident, mfcc = torch.rand(1, 3, 112, 112), torch.randn(1, 5, 12, 28)
    with torch.no_grad():
        assert torch.allclose(net(ident, mfcc, chunk=2), net(ident, mfcc), atol=1e-6)
    for kind in Fusion.KINDS:
        fusion = Fusion(kind, 1024, 32, 2, 4, 4)
        assert fusion(torch.randn(2, 7, 512), torch.randn(2, 7, 512), None).shape == (2, 7, 32), kind


def test_mfcc_windows_and_labels(clips):
    clip = clips[0]
    w = mfcc_windows(clip.audio, clip.sample_rate, clip.fps, clip.num_frames)
    assert w.shape == (clip.num_frames, 12, 28) and np.isfinite(w).all()
    # window of frame t is centred on the frame: frame t+1's window is shifted by 4 steps at 25 fps
    np.testing.assert_array_equal(w[5, :, 4:], w[6, :, :-4])
    assert au_labels(clip).shape == (clip.num_frames, 5)
    with pytest.raises(ValueError, match="16 kHz"):
        mfcc_windows(clip.audio, 8000, clip.fps, clip.num_frames)


def test_class_weights_follow_occurrence_rates():
    w = class_weights(torch.tensor([0.5, 0.1, 0.5, 0.9, 0.5]))
    assert torch.isclose(w.sum(), torch.tensor(5.0)) and w.argmax() == 1 and w.argmin() == 3


@pytest.mark.parametrize("depth", [1, 3])
def test_tcsan_receptive_field_on_an_impulse(depth):
    torch.manual_seed(0)
    tcn = TemporalConvNet(16, depth, 3, attention=True, tokens=4, heads=2).eval()
    t, centre = 41, 20
    x = torch.randn(1, t, 16)
    bumped = x.clone()
    bumped[0, centre] += 5.0
    with torch.no_grad():
        changed = (tcn(bumped) - tcn(x)).abs().amax(-1)[0] > 1e-6
    frames = torch.nonzero(changed).flatten()
    rf = receptive_field(depth, 3)
    assert rf == 2 ** (depth + 1) - 1 == tcn.receptive_field
    assert len(frames) == rf and frames.min() == centre - rf // 2 and frames.max() == centre + rf // 2


def test_audio2au_pretraining_reduces_its_loss(clips):
    method = build_method("tcsan_full", "tiny", {**FAST, "a2au_epochs": 6, "use_au_loss": False})
    data = [method.clip_data(c) for c in clips]
    labels = np.concatenate([d.aus for d in data])
    method._au_weights = class_weights(torch.from_numpy(labels.mean(0)))
    torch.manual_seed(0)
    log = method._pretrain(Audio2AU(4, 8), np.concatenate([d.mfcc for d in data]), labels, 6, 0, "cpu", images=False)
    print("Audio2AU pre-training loss", log["loss"])
    assert log["loss"][-1] < 0.8 * log["loss"][0]


def test_one_clip_overfit(clips):
    clip = clips[0]
    over = {**FAST, "epochs": 60, "batch_size": 1, "window_frames": 8, "lr": 3e-3, "use_per": False}
    method = build_method("tcsan_lrec", "tiny", over)
    method.fit([clip], [], seed=0)
    loss = [r["train_loss"] for r in method.train_log]
    pred = method.predict(MethodInput.from_clip(clip, method.inputs))
    assert pred.frames.shape == clip.frames.shape and pred.frames.dtype == np.uint8
    err = np.abs(pred.frames.astype(float) - clip.frames).mean()
    print(f"overfit: loss {loss[0]:.3f} -> {loss[-1]:.3f}, mean abs pixel error {err:.1f}")
    assert loss[-1] < 0.4 * loss[0] and err < 20


def test_checkpoint_round_trip_and_same_seed(clips, tmp_path):
    make = lambda: build_method("tcsan_full", "tiny", FAST)  # noqa: E731
    assert_same_seed_same_state(make, clips[:2], seed=3)
    method = make()
    method.fit(clips[:2], clips[2:], seed=0, workdir=tmp_path)
    assert "au_classifier" in method.pretrain_log and (tmp_path / "pretrain_log.json").exists()
    path = tmp_path / "m.ckpt.npz"
    method.save(path)
    loaded = TCSAN.load(path, method.config)
    inp = MethodInput.from_clip(clips[2], method.inputs)
    np.testing.assert_array_equal(method.predict(inp).frames, loaded.predict(inp).frames)
    report = loaded.fit_report({"train": clips[:2], "test": clips[2:]})  # paper Table 1, from the checkpoint
    assert set(report["test"]["per_au"]) == {"AU10", "AU14", "AU20", "AU25", "AU26"}
    assert report["test"]["frames"] == clips[2].num_frames and 0 <= report["train"]["avg_accuracy"] <= 1
    assert build_method("tcsan_lrec", "tiny", FAST).fit_report({}) is None
    with pytest.raises(ValueError):
        build_method("tcsan", "tiny", FAST).set_state(method.state())  # no Audio2AU in `tcsan`


def test_paper_preset_forward_backward_batch1(clips):
    # VGG19 ImageNet weights are not available offline: a random VGG19 (same architecture and layers)
    method = build_method("tcsan_full", "paper", {"vgg_weights": None, "window_frames": 2})
    method._au_weights = torch.ones(5)
    model = method.build_model()
    batch = method.make_batch(clips[:1], np.random.default_rng(0), "cpu")
    assert batch["target"].shape == (1, 2, 3, 112, 112)
    loss = method.compute_loss(model, batch)
    loss.backward()
    assert torch.isfinite(loss)
    assert model.identity.fc.weight.grad is not None and model.audio2au.fc2.weight.grad is not None
    assert model.au_classifier.fc[0].weight.grad is not None


def test_missing_vgg_weights_name_the_download(monkeypatch, tmp_path):
    monkeypatch.setenv("TALKBENCH_WEIGHTS_VGG19", str(tmp_path / "absent.pth"))
    method = build_method("tcsan_full", "paper")
    with pytest.raises(Exception, match="talkbench weights download vgg19"):
        method.perceptual("cpu")


def test_clip_without_au_labels_is_a_clear_error(clips):
    import dataclasses

    clip = dataclasses.replace(clips[0], aus=None)
    with pytest.raises(ValueError, match="no AU labels"):
        au_labels(clip)
