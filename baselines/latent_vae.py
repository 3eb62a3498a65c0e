"""The latent autoencoders of the latent-space renderers (SPEAR's SPADE-Net, FD2Talk's diffusion
UNet): diffusers' `AutoencoderKL`, either the pretrained Stable Diffusion VAE or a small one
trained by talkbench on a protocol's train-split frames.

- `load_sd_vae()`: `stabilityai/sd-vae-ft-mse` (the VAE both papers name: 4 latent channels, 8x
  downsampling, so 4 x 32 x 32 latents at 256 px; scaling factor 0.18215). The weights file
  (`diffusion_pytorch_model.safetensors` of that repository) is `sd_vae_ft_mse` in the weights
  registry: `talkbench weights download sd_vae_ft_mse`, or `$TALKBENCH_WEIGHTS_SD_VAE_FT_MSE`. The
  architecture is built here from `SD_VAE_CONFIG` (the repository's config.json) and the file is
  loaded with strict keys; a diffusers `save_pretrained` folder (config.json + weights) is accepted
  too, loaded with `AutoencoderKL.from_pretrained`.
- `tiny_autoencoder()`: the same class at CPU size (default 3 levels: 4x downsampling, 32/64/64
  channels), for the `tiny` presets.
- `train_autoencoder()`: L1 reconstruction + a small KL term on batches of train frames, Adam,
  deterministic for a seed. Methods call it in their fit, and the result is part of their
  checkpoint (their run folder is the cache: keyed by protocol, config, seed and code).
- `encode` / `decode`: uint8 or [0, 1] images <-> scaled latents (posterior mean, times the
  scaling factor, as latent diffusion does).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from core import weights as weights_registry
from core.errors import MetricUnavailable

SD_VAE_SCALING = 0.18215
SD_VAE_CONFIG = {  # huggingface.co/stabilityai/sd-vae-ft-mse config.json
    "in_channels": 3, "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2, "act_fn": "silu", "latent_channels": 4, "norm_num_groups": 32,
    "sample_size": 256, "scaling_factor": SD_VAE_SCALING,
}


def sd_vae_architecture():
    """A randomly initialised AutoencoderKL with the SD VAE's architecture (83.7M parameters)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(**SD_VAE_CONFIG)


def load_sd_vae(path: Optional[Union[str, os.PathLike]] = None):
    """The pretrained SD VAE (ft-MSE), frozen, in eval mode.

    `path`: the safetensors file (or a folder holding it under its registered name), or a diffusers
    `save_pretrained` folder; default: the weights registry's `sd_vae_ft_mse`.
    """
    from diffusers import AutoencoderKL

    if path is not None and (Path(path) / "config.json").is_file():
        try:
            vae = AutoencoderKL.from_pretrained(str(path))
        except Exception as exc:
            raise MetricUnavailable(f"{path} is not a loadable diffusers AutoencoderKL folder ({exc})") from exc
        return weights_registry.frozen(vae)
    file = weights_registry.resolve("sd_vae_ft_mse", path)
    from safetensors.torch import load_file

    try:
        state = load_file(str(file))
    except Exception as exc:
        raise MetricUnavailable(f"{file} is not a readable safetensors file ({exc}); replace it with "
                                "`talkbench weights download sd_vae_ft_mse --force`") from exc
    vae = sd_vae_architecture()
    try:
        vae.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise MetricUnavailable(f"{file} does not have the layout of stabilityai/sd-vae-ft-mse "
                                f"({str(exc).splitlines()[0]})") from exc
    return weights_registry.frozen(vae)


def tiny_autoencoder(latent_channels: int = 4, block_out_channels: Sequence[int] = (32, 64, 64),
                     layers_per_block: int = 1, norm_num_groups: int = 16,
                     scaling_factor: float = 1.0):
    """A small AutoencoderKL (downsampling factor 2 ** (len(block_out_channels) - 1))."""
    from diffusers import AutoencoderKL

    n = len(block_out_channels)
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * n,
                         up_block_types=["UpDecoderBlock2D"] * n,
                         block_out_channels=list(block_out_channels), layers_per_block=layers_per_block,
                         act_fn="silu", latent_channels=latent_channels, norm_num_groups=norm_num_groups,
                         scaling_factor=scaling_factor)


def downsampling_factor(vae) -> int:
    return 2 ** (len(vae.config.block_out_channels) - 1)


def to_tensor(images: Union[np.ndarray, torch.Tensor], size: Optional[int] = None,
              device: Union[str, torch.device] = "cpu") -> torch.Tensor:
    """uint8 N x H x W x 3 (or float N x 3 x H x W in [0, 1]) -> float N x 3 x size x size in [-1, 1]."""
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"expected uint8 N x H x W x 3 frames, got {images.dtype} {images.shape}")
        x = torch.from_numpy(images).to(device).permute(0, 3, 1, 2).float() / 255.0
    else:
        x = images.to(device).float()
    if size is not None and tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x * 2 - 1


def encode(vae, images: Union[np.ndarray, torch.Tensor], scaling: float, size: Optional[int] = None,
           sample: bool = False, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Images -> latents times `scaling` (posterior mean unless `sample`)."""
    device = next(vae.parameters()).device
    dist = vae.encode(to_tensor(images, size, device)).latent_dist
    z = dist.sample(generator) if sample else dist.mean
    return z * scaling


def decode(vae, latents: torch.Tensor, scaling: float) -> torch.Tensor:
    """Scaled latents -> images, float N x 3 x H x W in [0, 1] (not clamped, so losses see the raw
    output; clamp before writing frames)."""
    return (vae.decode(latents / scaling).sample + 1) / 2


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """float N x 3 x H x W in [0, 1] -> uint8 N x H x W x 3."""
    x = images.detach().clamp(0, 1).mul(255).round().byte().permute(0, 2, 3, 1)
    return x.cpu().numpy()


def train_autoencoder(vae, frames_fn: Callable[[np.random.Generator], np.ndarray], *, steps: int,
                      batch_size: int, lr: float, size: int, seed: int, kl_weight: float = 1e-6,
                      log: Optional[Callable[[int, float], None]] = None) -> list[float]:
    """Train `vae` in place: L1 reconstruction + kl_weight * KL, Adam(lr), `steps` steps.

    `frames_fn(rng)` returns one batch of uint8 N x H x W x 3 frames (the caller draws them from
    the train split only). Deterministic for a seed on CPU. Returns the per-step losses.
    Single-process under torchrun (not data-parallel): every rank runs this whole loop from the same
    seed and rank 0's weights are the ones saved (`baselines.data_parallel`).
    """
    if steps <= 0:
        return []
    rng = np.random.default_rng(seed)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    device = next(vae.parameters()).device
    vae.train()
    opt = torch.optim.Adam(vae.parameters(), lr=lr)
    losses = []
    for step in range(steps):
        batch = frames_fn(rng)
        if len(batch) > batch_size:
            batch = batch[:batch_size]
        x = to_tensor(batch, size, device)
        dist = vae.encode(x).latent_dist
        noise = torch.randn(dist.mean.shape, generator=gen).to(device)
        z = dist.mean + dist.std * noise
        recon = vae.decode(z).sample
        loss = F.l1_loss(recon, x) + kl_weight * dist.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if log is not None:
            log(step, losses[-1])
    vae.eval()
    return losses
