"""The torso network of the Gaussian-landmark NeRF (section IV-C): a UNet with deformable
convolutions that composites the head render, the torso and the background.

The paper uses DCNv3 (InternImage's deformable convolution v3: grouped, softmax-normalised
modulation, a CUDA kernel); `torchvision.ops.DeformConv2d` (DCNv2 when given a mask) stands in for
it here, since it runs on the CPU and needs no extension build. Each deformable block predicts its
sampling offsets (2 per kernel tap) and modulation mask (1 per tap, sigmoid) with a plain 3 x 3
convolution initialised to zero offsets and a mask of 0.5 (so training starts from an ordinary
convolution), as DCNv2 does.

Inputs (channels first, [0, 1]): the head render (3), its opacity (1) and the background (3) at the
render size. Outputs: the torso's colour (3, sigmoid) and opacity (1, sigmoid). Compositing, head in
front: C = C_head + (1 - a_head) (a_torso C_torso + (1 - a_torso) B), which the NeRF papers
(AD-NeRF, RAD-NeRF) use for their torso models too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DeformBlock(nn.Module):
    """3 x 3 modulated deformable convolution (offsets and mask from a 3 x 3 conv) + GroupNorm + SiLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        from torchvision.ops import DeformConv2d

        self.offset = nn.Conv2d(cin, 3 * 9, 3, stride, 1)
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)
        self.conv = DeformConv2d(cin, cout, 3, stride, 1)
        self.norm = nn.GroupNorm(min(8, cout), cout)

    def forward(self, x):
        om = self.offset(x)
        offset, mask = om[:, :18], torch.sigmoid(om[:, 18:])
        return F.silu(self.norm(self.conv(x, offset, mask)))


class TorsoUNet(nn.Module):
    """UNet over `levels` resolutions (`base` x 2^i channels), a deformable block at every level of
    the encoder and the decoder, skip connections by concatenation."""

    IN = 7  # head rgb, head opacity, background rgb

    def __init__(self, base: int = 16, levels: int = 3) -> None:
        super().__init__()
        ch = [base * 2 ** i for i in range(levels)]
        self.stem = nn.Conv2d(self.IN, ch[0], 3, 1, 1)
        self.down = nn.ModuleList([DeformBlock(ch[0], ch[0])] +
                                  [DeformBlock(ch[i - 1], ch[i], stride=2) for i in range(1, levels)])
        self.up = nn.ModuleList([DeformBlock(ch[i] + ch[i - 1], ch[i - 1]) for i in range(levels - 1, 0, -1)])
        self.out = nn.Conv2d(ch[0], 4, 1)

    def forward(self, head_rgb, head_acc, background):
        """(torso rgb B x 3 x H x W, torso opacity B x 1 x H x W)."""
        x = self.stem(torch.cat([head_rgb, head_acc, background], 1))
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
        for block, skip in zip(self.up, reversed(skips[:-1])):
            x = F.interpolate(x, size=skip.shape[2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], 1))
        out = self.out(x)
        return torch.sigmoid(out[:, :3]), torch.sigmoid(out[:, 3:])

    @staticmethod
    def composite(head_rgb, head_acc, torso_rgb, torso_acc, background):
        """Head in front of the torso in front of the background (premultiplied head colour)."""
        return head_rgb + (1.0 - head_acc) * (torso_acc * torso_rgb + (1.0 - torso_acc) * background)


__all__ = ["DeformBlock", "TorsoUNet"]
