"""SPEAR stage 2: SPADE-Net in the latent space of a frozen VAE (Cao & Tran 2025, section 3.2).

- `SPADE`: spatially-adaptive denormalisation (Park et al. 2019): parameter-free instance norm of
  x, then x * (1 + gamma(c)) + beta(c), with gamma and beta 3x3 convolutions of a shared 3x3
  convolution + ReLU of the condition c (resized to x's size).
- `SpadeResBlock`: SPADE's residual block: [SPADE, LeakyReLU 0.2, 3x3 conv] x 2, plus a learned
  shortcut (SPADE, 1x1 conv) when the channel count changes.
- `FlowGenerator` (G1): a 3x3 conv of [reference image latent, reference landmark latent], N SPADE
  residual blocks conditioned on the target landmark latent, a 3x3 conv to a 2-channel flow
  (initialised to zero: the warp starts as the identity). The flow is an offset, in grid_sample's
  [-1, 1] coordinates, added to the identity grid; G1's features and the reference latent are
  both warped with it (bilinear `grid_sample`, border padding).
- `LatentGenerator` (G2): a 3x3 conv of [masked target latent, target landmark latent], N - 1 SPADE
  residual blocks conditioned on G1's warped features, a last one conditioned on the warped
  reference latent, a 3x3 conv to the target latent.
- `SpadeNet`: G1 + G2 (Eq. 2-3). `residual=True` (the tiny preset's choice, not the paper's) adds
  the (warped) reference latent to G2's output, so G2 learns a change from the reference. `flow=False` is the `spear_no_flow` ablation: no G1; G2's first
  N - 1 blocks are conditioned on the target landmark latent and its last one on the unwarped
  reference latent, so the only difference is what the flow warping brings.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SPADE(nn.Module):
    def __init__(self, channels: int, cond_channels: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, affine=False)
        self.shared = nn.Sequential(nn.Conv2d(cond_channels, hidden, 3, padding=1), nn.ReLU(inplace=True))
        self.gamma = nn.Conv2d(hidden, channels, 3, padding=1)
        self.beta = nn.Conv2d(hidden, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if cond.shape[-2:] != x.shape[-2:]:
            cond = F.interpolate(cond, size=x.shape[-2:], mode="bilinear", align_corners=False)
        h = self.shared(cond)
        return self.norm(x) * (1 + self.gamma(h)) + self.beta(h)


class SpadeResBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, cond_channels: int, hidden: int) -> None:
        super().__init__()
        mid = min(in_channels, out_channels)
        self.norm0 = SPADE(in_channels, cond_channels, hidden)
        self.conv0 = nn.Conv2d(in_channels, mid, 3, padding=1)
        self.norm1 = SPADE(mid, cond_channels, hidden)
        self.conv1 = nn.Conv2d(mid, out_channels, 3, padding=1)
        self.learned_shortcut = in_channels != out_channels
        if self.learned_shortcut:
            self.norm_s = SPADE(in_channels, cond_channels, hidden)
            self.conv_s = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        skip = self.conv_s(self.norm_s(x, cond)) if self.learned_shortcut else x
        h = self.conv0(F.leaky_relu(self.norm0(x, cond), 0.2))
        h = self.conv1(F.leaky_relu(self.norm1(h, cond), 0.2))
        return skip + h


def warp(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample x (B x C x H x W) at identity grid + flow (B x 2 x H x W, [-1, 1] units, x then y)."""
    b, _, h, w = flow.shape
    ys = torch.linspace(-1, 1, h, device=flow.device, dtype=flow.dtype)
    xs = torch.linspace(-1, 1, w, device=flow.device, dtype=flow.dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    grid = torch.stack([gx, gy], dim=-1).unsqueeze(0) + flow.permute(0, 2, 3, 1)
    if x.shape[-2:] != (h, w):
        raise ValueError(f"warp: features of size {tuple(x.shape[-2:])}, flow of size {(h, w)}")
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)


class FlowGenerator(nn.Module):
    """G1: (ref image latent, ref landmark latent | target landmark latent) -> flow, warped features,
    warped reference latent."""

    def __init__(self, latent: int, channels: int, blocks: int, hidden: int) -> None:
        super().__init__()
        self.stem = nn.Conv2d(2 * latent, channels, 3, padding=1)
        self.blocks = nn.ModuleList(SpadeResBlock(channels, channels, latent, hidden) for _ in range(blocks))
        self.to_flow = nn.Conv2d(channels, 2, 3, padding=1)
        nn.init.zeros_(self.to_flow.weight)
        nn.init.zeros_(self.to_flow.bias)

    def forward(self, ref_img, ref_lmk, tgt_lmk):
        h = self.stem(torch.cat([ref_img, ref_lmk], 1))
        for block in self.blocks:
            h = block(h, tgt_lmk)
        flow = self.to_flow(F.leaky_relu(h, 0.2))
        return flow, warp(h, flow), warp(ref_img, flow)


class LatentGenerator(nn.Module):
    """G2: (masked target latent, target landmark latent | warped features, warped ref latent) -> latent."""

    def __init__(self, latent: int, channels: int, blocks: int, hidden: int, cond_channels: int) -> None:
        super().__init__()
        if blocks < 2:
            raise ValueError(f"G2 needs at least 2 SPADE blocks (N - 1 on the features, 1 on the reference), got {blocks}")
        self.stem = nn.Conv2d(2 * latent, channels, 3, padding=1)
        self.blocks = nn.ModuleList(SpadeResBlock(channels, channels, cond_channels, hidden) for _ in range(blocks - 1))
        self.last = SpadeResBlock(channels, channels, latent, hidden)
        self.out = nn.Conv2d(channels, latent, 3, padding=1)

    def forward(self, masked, tgt_lmk, features, reference):
        h = self.stem(torch.cat([masked, tgt_lmk], 1))
        for block in self.blocks:
            h = block(h, features)
        h = self.last(h, reference)
        return self.out(F.leaky_relu(h, 0.2))


class SpadeNet(nn.Module):
    """G1 + G2 on 4-channel VAE latents (Eq. 2-3); `flow=False`: the no-flow ablation (module docstring)."""

    def __init__(self, latent: int = 4, channels: int = 64, blocks: int = 4, hidden: int = 64,
                 flow: bool = True, residual: bool = False) -> None:
        super().__init__()
        self.use_flow, self.residual = flow, residual
        self.g1 = FlowGenerator(latent, channels, blocks, hidden) if flow else None
        self.g2 = LatentGenerator(latent, channels, blocks, hidden, channels if flow else latent)

    def forward(self, masked, tgt_lmk, ref_img, ref_lmk, return_flow: bool = False):
        if self.g1 is not None:
            flow, features, reference = self.g1(ref_img, ref_lmk, tgt_lmk)
        else:
            flow, features, reference = None, tgt_lmk, ref_img
        out = self.g2(masked, tgt_lmk, features, reference)
        if self.residual:  # G2 predicts the change from the (warped) reference latent
            out = out + reference
        return (out, flow) if return_flow else out
