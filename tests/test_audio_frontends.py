"""Audio front-ends: every kind at tiny size, MFCC against librosa, pretrained loading offline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from baselines.audio_frontends import (HF_KINDS, KINDS, FrontendUnavailable, build_frontend, deltas,
                                       resample_to_frames)


def _speechy(batch: int, seconds: float, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    n = int(16000 * seconds)
    t = np.arange(n) / 16000
    env = np.abs(np.sin(2 * np.pi * 1.5 * t))
    x = np.stack([env * (np.sin(2 * np.pi * (120 + 40 * b) * t) + 0.3 * rng.standard_normal(n))
                  for b in range(batch)])
    return torch.from_numpy(x.astype(np.float32))


@pytest.mark.parametrize("kind", KINDS)
def test_shapes_every_kind(kind):
    torch.manual_seed(0)
    fe = build_frontend(kind, {})
    audio = _speechy(2, 1.2)
    for frames in (1, 5, 30, 47):
        out = fe(audio, frames)
        assert out.shape == (2, frames, fe.dim)
        assert torch.isfinite(out).all()
    # a batch is the same as its items one by one (no cross-sample leakage)
    fe.eval()
    together = fe(audio, 30)
    alone = fe(audio[1:], 30)
    torch.testing.assert_close(together[1:], alone, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kind", HF_KINDS)
def test_gradients_flow_unless_frozen(kind):
    torch.manual_seed(0)
    fe = build_frontend(kind, {"hidden_size": 32, "num_layers": 2, "num_heads": 2})
    fe.train()
    fe(_speechy(2, 0.6), 15).pow(2).mean().backward()
    unused = ("masked_spec_embed",)  # only spec augment reads it
    if kind == "wav2vec2_conformer":
        unused += ("pos_conv_embed",)  # the conformer's default relative positions replace the conv
    used = [(n, p) for n, p in fe.named_parameters() if not any(u in n for u in unused)]
    assert used and all(p.grad is not None and p.grad.abs().sum() > 0 for _, p in used), \
        [n for n, p in used if p.grad is None or p.grad.abs().sum() == 0]

    part = build_frontend(kind, {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "freeze": "feature_encoder"})
    part.train()
    part(_speechy(2, 0.6), 15).pow(2).mean().backward()
    for name, p in part.named_parameters():
        if "feature_extractor" in name:
            assert p.grad is None
    assert any(p.grad is not None for n, p in part.named_parameters() if "encoder.layers" in n)

    frozen = build_frontend(kind, {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "freeze": "all"})
    frozen.train()
    assert not frozen.encoder.training  # kept in eval mode
    out = frozen(_speechy(1, 0.6), 15)
    assert not out.requires_grad


def test_layers_select_hidden_states():
    torch.manual_seed(0)
    fe = build_frontend("hubert", {"hidden_size": 32, "num_heads": 2, "num_layers": 3, "layers": [1, 3]})
    assert fe.dim == 64
    audio = _speechy(1, 0.8)
    out = fe(audio, 20)
    direct = fe.encoder((audio - audio.mean()) / audio.std(unbiased=False), output_hidden_states=True)
    n = direct.hidden_states[1].shape[1]
    want = torch.cat([direct.hidden_states[1], direct.hidden_states[3]], -1)
    torch.testing.assert_close(fe.features(audio), want, atol=1e-4, rtol=1e-4)
    assert fe.features(audio).shape[1] == n and out.shape == (1, 20, 64)
    mean = build_frontend("hubert", {"hidden_size": 32, "num_heads": 2, "num_layers": 3, "layers": [1, -1],
                                     "layer_combine": "mean"})
    assert mean.dim == 32
    with pytest.raises(ValueError, match="out of range"):
        build_frontend("hubert", {"hidden_size": 32, "num_heads": 2, "num_layers": 3, "layers": [5]})


@pytest.mark.parametrize("kind", HF_KINDS)
def test_resample_before_the_transformer(kind):
    """resample="before" (FaceFormer): at the CNN's own rate it is the plain encoder; at the video
    rate the transformer runs on the resampled CNN features, which is not resampling its output."""
    torch.manual_seed(0)
    before = build_frontend(kind, {"resample": "before"}).eval()
    after = build_frontend(kind, {}).eval()
    after.load_state_dict(before.state_dict())
    audio = _speechy(2, 1.2)
    native = after.features(audio).shape[1]  # 59 CNN frames for 1.2 s at 16 kHz
    torch.testing.assert_close(before(audio, native), after(audio, native), atol=1e-5, rtol=1e-5)
    out = before(audio, 30)
    assert out.shape == (2, 30, before.dim) and torch.isfinite(out).all()
    assert not torch.allclose(out, after(audio, 30), atol=1e-3)
    with pytest.raises(ValueError, match="resample"):
        build_frontend(kind, {"resample": "sideways"})


def test_resample_is_linear_with_aligned_ends():
    x = torch.arange(5, dtype=torch.float32).reshape(1, 5, 1)  # 0..4
    y = resample_to_frames(x, 9)
    torch.testing.assert_close(y[0, :, 0], torch.linspace(0, 4, 9))
    assert resample_to_frames(x, 5) is x
    assert resample_to_frames(x[:, :1], 4).shape == (1, 4, 1)


def test_mfcc_matches_an_independent_numpy_reference():
    """Framing, window, power spectrum, mel filters (librosa's, HTK scale) and DCT (scipy) done apart."""
    librosa = pytest.importorskip("librosa")
    from scipy.fft import dct

    audio = _speechy(1, 1.0)[0].numpy().astype(np.float64)
    fe = build_frontend("mfcc", {"n_mfcc": 13, "deltas": 0, "normalize": "none", "preemphasis": 0.0})
    ours = fe.features(torch.from_numpy(audio).float()[None])[0].numpy()
    padded = np.pad(audio, 256, mode="reflect")
    window = np.zeros(512)
    window[56:456] = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400)  # periodic Hann, centred
    frames = np.stack([padded[i * 160:i * 160 + 512] for i in range(1 + len(audio) // 160)])
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2
    fb = librosa.filters.mel(sr=16000, n_fft=512, n_mels=40, fmin=20.0, fmax=8000.0, htk=True, norm=None)
    ref = dct(np.log(power @ fb.T + 1e-6), type=2, norm="ortho", axis=1)[:, :13]
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-3, atol=5e-3)


def test_deltas_match_librosa():
    librosa = pytest.importorskip("librosa")
    x = np.random.default_rng(0).standard_normal((20, 3)).astype(np.float64)
    ours = deltas(torch.from_numpy(x)[None], 2)[0].numpy()
    ref = librosa.feature.delta(x.T, width=5, order=1, mode="nearest").T
    np.testing.assert_allclose(ours, ref, atol=1e-9)


def test_pretrained_round_trip_through_a_local_folder(tmp_path):
    torch.manual_seed(0)
    for kind in ("wav2vec2", "hubert"):
        tiny = build_frontend(kind, {"hidden_size": 32, "num_heads": 2})
        tiny.encoder.save_pretrained(tmp_path / kind)
        again = build_frontend(kind, {"pretrained": str(tmp_path / kind), "freeze": "feature_encoder"})
        tiny.eval(), again.eval()
        audio = _speechy(1, 0.7)
        torch.testing.assert_close(tiny(audio, 17), again(audio, 17))
        assert again.dim == 32
        assert not any(p.requires_grad for p in again.encoder.feature_extractor.parameters())


def test_missing_pretrained_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FrontendUnavailable, match="does not exist"):
        build_frontend("wav2vec2", {"pretrained": str(tmp_path / "no-such-model")})
    with pytest.raises(FrontendUnavailable, match=r"talkbench-test/no-such-w2v.*from_pretrained"):
        build_frontend("hubert", {"pretrained": "talkbench-test/no-such-w2v"})
    with pytest.raises(ValueError, match="unknown audio front-end"):
        build_frontend("deepspeech", {})
    with pytest.raises(ValueError, match="only apply to a random model"):
        build_frontend("wav2vec2", {"pretrained": str(tmp_path), "hidden_size": 8})
