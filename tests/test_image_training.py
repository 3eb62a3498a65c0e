"""The shared image losses (baselines.image_training) and latent autoencoders (baselines.latent_vae)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from baselines import image_training as it
from baselines import latent_vae as lv
from core.errors import MetricUnavailable


# tiny models run fastest on one intra-op thread (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


def test_perceptual_is_zero_on_equal_images_and_differentiable():
    torch.manual_seed(0)
    loss = it.VGG19Perceptual(weights=None, layers=("relu1_1", "relu2_1"), layer_weights=(0.5, 1.0))
    assert len(loss.features) == it.VGG19_LAYERS["relu2_1"] + 1
    assert not any(p.requires_grad for p in loss.parameters())
    x = torch.rand(2, 3, 32, 32)
    assert float(loss(x, x)) == 0.0
    y = x.clone().requires_grad_(True)
    value = loss(y, x + 0.1 * torch.randn_like(x))
    value.backward()
    assert float(value.detach()) > 0 and y.grad.abs().sum() > 0
    loss.train()
    assert not loss.features.training  # the loss network stays in eval mode


def test_perceptual_matches_its_definition():
    torch.manual_seed(1)
    loss = it.VGG19Perceptual(weights=None, layers=("relu1_1", "relu2_1"), layer_weights=(0.25, 2.0))
    x, y = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    mean = torch.tensor(it.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(it.IMAGENET_STD).view(1, 3, 1, 1)
    hx, hy, expected = (x - mean) / std, (y - mean) / std, 0.0
    for i, layer in enumerate(loss.features):
        hx, hy = layer(hx), layer(hy)
        if i == 1:
            expected += 0.25 * (hx - hy).abs().mean()
        if i == 6:
            expected += 2.0 * (hx - hy).abs().mean()
    assert float(loss(x, y)) == pytest.approx(float(expected), rel=1e-6)


def test_perceptual_weights_come_from_the_registry(tmp_path, monkeypatch):
    monkeypatch.setenv("TALKBENCH_HOME", str(tmp_path))
    with pytest.raises(MetricUnavailable, match="talkbench weights download vgg19"):
        it.VGG19Perceptual()
    bad = tmp_path / "vgg19.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, bad)
    with pytest.raises(MetricUnavailable, match="layout of torchvision vgg19"):
        it.VGG19Perceptual(path=bad)
    with pytest.raises(ValueError, match="unknown VGG19 layers"):
        it.VGG19Perceptual(weights=None, layers=("relu9_9",), layer_weights=(1.0,))


def test_patch_discriminator_and_lsgan_losses():
    d = it.PatchDiscriminator(in_channels=3, ndf=8, n_layers=3)
    assert d(torch.rand(2, 3, 64, 64)).shape == (2, 1, 6, 6)  # 64 -> 32 -> 16 -> 8 -> 7 -> 6
    real, fake = torch.tensor([1.0, 0.5]), torch.tensor([0.0, 1.0])
    assert float(it.lsgan_d_loss(real, fake)) == pytest.approx(0.5 * ((0 + 0.25) / 2 + (0 + 1) / 2))
    assert float(it.lsgan_g_loss(fake)) == pytest.approx((1 + 0) / 2)


def test_sd_vae_loads_from_the_registry_file_and_a_diffusers_folder(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    monkeypatch.setenv("TALKBENCH_HOME", str(tmp_path / "home"))
    with pytest.raises(MetricUnavailable, match="talkbench weights download sd_vae_ft_mse"):
        lv.load_sd_vae()
    torch.manual_seed(0)
    vae = lv.sd_vae_architecture()
    assert vae.config.scaling_factor == lv.SD_VAE_SCALING
    file = tmp_path / "sd-vae-ft-mse.safetensors"
    save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, str(file))
    monkeypatch.setenv("TALKBENCH_WEIGHTS_SD_VAE_FT_MSE", str(file))
    loaded = lv.load_sd_vae()
    assert not any(p.requires_grad for p in loaded.parameters())
    key = "decoder.conv_out.weight"
    assert torch.equal(loaded.state_dict()[key], vae.state_dict()[key])
    z = lv.encode(loaded, np.zeros((1, 64, 64, 3), np.uint8), lv.SD_VAE_SCALING)
    assert z.shape == (1, 4, 8, 8)  # 8x downsampling, 4 latent channels
    del vae, loaded

    tiny = lv.tiny_autoencoder()
    tiny.save_pretrained(tmp_path / "folder")
    again = lv.load_sd_vae(tmp_path / "folder")
    assert torch.equal(again.state_dict()[key], tiny.state_dict()[key])
    save_file({"decoder.conv_out.weight": torch.zeros(1)}, str(file))
    with pytest.raises(MetricUnavailable, match="layout of stabilityai/sd-vae-ft-mse"):
        lv.load_sd_vae()


def test_tiny_autoencoder_trains_deterministically():
    ramp = np.linspace(0, 200, 32, dtype=np.float32)
    frames = np.zeros((4, 32, 32, 3), np.uint8)
    for i in range(4):  # smooth images with a bright square at a different place in each
        frames[i] = (ramp[None, :, None] * np.array([1.0, 0.5, 0.2]) + 20 * i).astype(np.uint8)
        frames[i, 4 + 4 * i:14 + 4 * i, 8:20] = 240

    def batch(rng):
        return frames[rng.permutation(4)[:2]]

    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        vae = lv.tiny_autoencoder(block_out_channels=(16, 16), norm_num_groups=8)
        assert lv.downsampling_factor(vae) == 2
        losses = lv.train_autoencoder(vae, batch, steps=40, batch_size=2, lr=3e-3, size=32, seed=0)
        runs.append((losses, vae.state_dict()["decoder.conv_out.weight"].clone()))
    (losses, w0), (losses1, w1) = runs
    assert losses == losses1 and torch.equal(w0, w1)
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
    out = lv.to_uint8(lv.decode(vae, lv.encode(vae, frames, 1.0), 1.0))
    assert out.shape == frames.shape and out.dtype == np.uint8
    with pytest.raises(ValueError, match="uint8 N x H x W x 3"):
        lv.to_tensor(frames.astype(np.float32))
