"""SPEAR end to end (stage 1 spear_a2l + SPADE-Net in a VAE latent space): sketches, SPADE-Net shapes
and the flow path's gradients, fit / predict / checkpoint, determinism, one-clip overfit, and the
paper preset's forward / backward pass at batch 1."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from baselines import available_methods, build_method
from baselines.spear import SpearMethod, full_landmarks, mouth_mask, render_sketch
from baselines.spear.model import SpadeNet, warp
from baselines.spear_a2l import POINTS
from core.errors import MetricUnavailable
from core.types import Clip, MethodInput
from method_checks import assert_same_seed_same_state

STAGE1_FAST = {"epochs": 1, "batch_size": 2, "window_frames": 12, "d_model": 32, "heads": 2, "layers": 1,
               "ff": 64, "audio_channels": [8, 16], "landmark_channels": [8, 16], "fe_hidden": 16,
               "fe_num_layers": 3, "fe_heads": 2, "fe_conv_dim": 8}
FAST = {"epochs": 1, "batch_size": 2, "size": 32, "vae_steps": 2, "vae_batch": 4, "vae_channels": (16, 16),
        "channels": 8, "hidden": 8, "disc_ndf": 8, "disc_layers": 1, "stage1": STAGE1_FAST}


# tiny models run fastest on one intra-op thread (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="session")
def clips(talkbench_home) -> list[Clip]:
    from bench.data.synthtalk import corpus

    return corpus.load_clips(corpus.build(size=2))[:3]


def _short(clip: Clip, frames: int) -> Clip:
    """The clip's first `frames` frames (audio cut to match), to keep predictions fast."""
    import dataclasses

    spf = clip.sample_rate // int(clip.fps)
    video = clip.frames[:frames]
    return dataclasses.replace(clip, id=clip.id + f"-{frames}", audio=clip.audio[:frames * spf],
                               landmarks=clip.landmarks[:frames], pose=clip.pose[:frames],
                               frames_loader=None, _frames=video,
                               landmarks_found=None if clip.landmarks_found is None else clip.landmarks_found[:frames])


def test_registered_with_ablation():
    assert {"spear", "spear_no_flow"} <= set(available_methods())
    assert SpearMethod.ablations == ("spear_no_flow",)
    assert build_method("spear_no_flow").config.flow is False


# ----------------------------------------------------------------------------- geometry + sketches

def test_full_landmarks_and_sketch(clips):
    ident = clips[0].landmarks[0]
    # the identity's own jaw + mouth give back the identity
    np.testing.assert_allclose(full_landmarks(ident[None, list(POINTS)], ident)[0], ident, atol=1e-3)
    # a rigid shift of the lower points moves the upper ones with it
    moved = full_landmarks(ident[None, list(POINTS)] + np.float32([5, -3]), ident)[0]
    np.testing.assert_allclose(moved, ident + np.float32([5, -3]), atol=1e-3)
    sketch = render_sketch(clips[0].landmarks[:3], (256, 256), 64)
    assert sketch.shape == (3, 64, 64, 3) and sketch.dtype == np.uint8 and sketch.any()
    assert not np.array_equal(render_sketch(ident[None], (256, 256), 64),
                              render_sketch(ident[None] + 10, (256, 256), 64))
    mask = mouth_mask(clips[0].landmarks[:1], (256, 256), 64, 0.25)
    assert 0 < mask.sum() < 64 * 64 / 4
    with pytest.raises(ValueError, match="68 x 2"):
        render_sketch(ident[None, :37], (256, 256), 64)


# ----------------------------------------------------------------------------- SPADE-Net

def test_spadenet_shapes_and_flow_gradient():
    torch.manual_seed(0)
    net = SpadeNet(latent=4, channels=8, blocks=2, hidden=8)
    x = [torch.randn(2, 4, 16, 16) for _ in range(4)]
    out, flow = net(*x, return_flow=True)
    assert out.shape == (2, 4, 16, 16) and flow.shape == (2, 2, 16, 16)
    assert torch.count_nonzero(flow) == 0  # zero-initialised flow head: identity warp at the start
    out.square().mean().backward()
    for name, p in net.g1.named_parameters():  # every G1 weight, the flow head included, learns
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    # after a step on the flow head, the flow (and so the output) moves
    with torch.no_grad():
        net.g1.to_flow.bias += 0.1
    out2, flow2 = net(*x, return_flow=True)
    assert flow2.abs().min() > 0 and not torch.allclose(out, out2)
    no_flow = SpadeNet(latent=4, channels=8, blocks=2, hidden=8, flow=False)
    assert no_flow.g1 is None and no_flow(*x).shape == (2, 4, 16, 16)


def test_warp_by_one_pixel_shifts():
    img = torch.arange(25.0).view(1, 1, 5, 5)
    flow = torch.zeros(1, 2, 5, 5)
    flow[:, 0] = 2 / 4  # one pixel in x, in [-1, 1] units with align_corners
    shifted = warp(img, flow)
    torch.testing.assert_close(shifted[..., :4], img[..., 1:])
    torch.testing.assert_close(warp(img, torch.zeros(1, 2, 5, 5)), img)


# ----------------------------------------------------------------------------- method

def test_fit_predict_checkpoint_round_trip(clips, tmp_path):
    method = build_method("spear", "tiny", FAST)
    method.fit(clips[:2], [], seed=0)
    clip = _short(clips[2], 12)
    pred = method.predict(MethodInput.from_clip(clip, method.inputs))
    assert pred.frames.shape == (12, 256, 256, 3) and pred.frames.dtype == np.uint8
    assert pred.landmarks.shape == (12, len(POINTS), 2) and pred.points == POINTS
    state = method.state()
    assert any(k.startswith("stage1.") for k in state) and any(k.startswith("net.g1.") for k in state)
    path = tmp_path / "spear.npz"
    method.save(path)
    loaded = SpearMethod.load(path)
    again = loaded.predict(MethodInput.from_clip(clip, loaded.inputs))
    np.testing.assert_array_equal(again.frames, pred.frames)
    np.testing.assert_array_equal(again.landmarks, pred.landmarks)
    state["net.g2.out.weight"] = state["net.g2.out.weight"][:1]
    with pytest.raises(ValueError, match="shape"):
        build_method("spear", "tiny", FAST).set_state(state)


def test_same_seed_same_weights(clips):
    assert_same_seed_same_state(lambda: build_method("spear", "tiny", FAST), clips[:2], seed=3)


def test_one_clip_overfit(clips):
    """Stage 2 trained on one clip: its frames get much closer to that clip's frames than before
    (G2 without the residual path and no GAN term, so nothing but the fit moves the frames)."""
    clip = _short(clips[0], 16)
    over = {**FAST, "epochs": 60, "batch_size": 1, "vae_steps": 40, "lr": 3e-3, "lr_min": 1e-3,
            "residual": False, "lambda_g": 0.0}

    def error(method) -> float:
        pred = method.predict(MethodInput.from_clip(clip, method.inputs))
        return float(np.abs(pred.frames.astype(np.float32) - clip.frames).mean())

    before = build_method("spear", "tiny", {**over, "epochs": 0})
    before.fit([clip], [], seed=0)
    after = build_method("spear", "tiny", over)
    after.fit([clip], [], seed=0)
    e0, e1 = error(before), error(after)
    print(f"one-clip overfit: mean abs frame error {e0:.1f} -> {e1:.1f} (of 255)")
    assert e1 < 0.7 * e0


# ----------------------------------------------------------------------------- paper preset

def test_paper_preset_forward_backward_at_batch_1():
    """Stage 2 at the paper's sizes: SD VAE architecture (random init: never downloaded), SpadeNet
    N = 4 x 256 channels, PatchDiscriminator; one training loss + backward at batch 1. The images are
    64 px (latents 4 x 8 x 8) rather than the paper's 256 px: every module is convolutional, so the
    weights are the paper's, and the frozen SD VAE's passes at 256 px take minutes on a shared CPU."""
    method = build_method("spear", "paper", {"stage1_preset": "tiny", "perceptual": None})
    torch.manual_seed(0)
    model = method.build_model()
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    print(f"paper: SpadeNet {count(model.net) / 1e6:.1f}M (G1 {count(model.net.g1) / 1e6:.1f}M, "
          f"G2 {count(model.net.g2) / 1e6:.1f}M), discriminator {count(model.disc) / 1e6:.1f}M, "
          f"VAE {count(model.vae) / 1e6:.1f}M (frozen)")
    assert model.net.g1.to_flow.in_channels == 256 and len(model.net.g1.blocks) == 4
    rng = np.random.default_rng(0)
    img = lambda: torch.as_tensor(rng.random((1, 3, 64, 64)), dtype=torch.float32)  # noqa: E731
    lmk = np.tile(np.linspace(60, 200, 68, dtype=np.float32)[:, None], (1, 2))
    batch = {"target": img(), "reference": img(), "sketch": img(), "ref_sketch": img(),
             "mouth": torch.as_tensor(mouth_mask(lmk[None], (256, 256), 64, 0.25))}
    model.train()
    loss = method.compute_loss(model, batch)
    loss.backward()
    assert torch.isfinite(loss)
    assert model.net.g1.to_flow.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.vae.parameters())


def test_paper_vae_missing_names_download(talkbench_home):
    method = build_method("spear", "paper", {"stage1_preset": "tiny"})
    with pytest.raises(MetricUnavailable, match="talkbench weights download sd_vae_ft_mse"):
        method.fit_vae([], "cpu", 0, None)


def test_frames_figure(clips, tmp_path):
    """The report's frames figure: ground truth and each video row at 4 time points, mouth crops."""
    from bench import figures
    from core.types import Prediction

    clip = _short(clips[0], 20)
    figures.save_reference(tmp_path, clip)
    still = Prediction(clip.id, landmarks=np.repeat(clip.landmarks[:1], 20, 0),
                       frames=np.repeat(clip.frames[:1], 20, 0))
    figures.save_row(tmp_path, "static", clip, still)
    figures.save_row(tmp_path, "spear_a2l", clip, Prediction(clip.id, landmarks=clip.landmarks))
    made = figures.make_figures(["static", "spear_a2l"], tmp_path)
    assert [p.name for p, _ in made] == ["landmark_overlay.png", "mouth_opening.png", "frames.png"]
    assert (tmp_path / "frames.png").stat().st_size > 0
    with np.load(tmp_path / "static.npz") as d:
        assert d["strip"].shape == (4, 256, 256, 3)
