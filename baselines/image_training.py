"""Training losses shared by the frame-generating methods: a VGG19 perceptual loss and a PatchGAN
discriminator with least-squares GAN losses.

- `VGG19Perceptual`: the weighted L1 distance between VGG19 feature maps of two images, the loss
  IP_LAP / pix2pixHD (and so SPEAR, TCSAN and the NeRF papers) call "perceptual" or "VGG" loss.
  The network is torchvision's `vgg19` architecture; its ImageNet weights (torchvision's
  `VGG19_Weights.IMAGENET1K_V1`) load through the weights registry as `vgg19`, and a missing file is
  an error that names `talkbench weights download vgg19`. `weights=None` keeps the random
  initialisation: a fixed random convolutional feature space, which still penalises structural
  differences at several scales but is not the ImageNet perceptual space; only the CPU `tiny`
  presets and tests use it, and each method that does says so in its config.
  Default layers relu1_1 ... relu5_1 with weights 1/32 ... 1 (pix2pixHD's `VGGLoss`, which IP_LAP
  uses). Inputs are RGB in [0, 1], normalised here with ImageNet's mean and std.
- `PatchDiscriminator`: pix2pix's N-layer PatchGAN (4x4 convolutions, stride 2, instance norm,
  LeakyReLU 0.2), one logit per overlapping patch. Trained with the least-squares GAN objective
  (`lsgan_d_loss`, `lsgan_g_loss`: Mao et al. 2017, real -> 1, fake -> 0), which pix2pixHD and
  IP_LAP use.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from core import weights as weights_registry

# torchvision vgg19().features indices of the ReLU after each block's first convolution
VGG19_LAYERS = {"relu1_1": 1, "relu1_2": 3, "relu2_1": 6, "relu2_2": 8, "relu3_1": 11,
                "relu3_2": 13, "relu4_1": 20, "relu4_2": 22, "relu5_1": 29, "relu5_2": 31}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def vgg19_features(weights: Optional[str] = "vgg19", path=None) -> nn.Sequential:
    """torchvision's VGG19 feature stack, with ImageNet weights from the registry (or random)."""
    from torchvision.models import vgg

    if weights is None:  # the feature stack alone, initialised as torchvision initialises VGG
        features = vgg.make_layers(vgg.cfgs["E"], batch_norm=False)
        for m in features.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        return weights_registry.frozen(features)
    net = vgg.vgg19(weights=None)
    file = weights_registry.resolve(weights, path)
    weights_registry.load_state_dict_strict(net, file, weights, "torchvision vgg19")
    return weights_registry.frozen(net.features)


class VGG19Perceptual(nn.Module):
    """Weighted L1 distance of VGG19 activations: sum_l w_l * mean|phi_l(x) - phi_l(y)|.

    x, y: N x 3 x H x W RGB in [0, 1]. The network is frozen (no parameter requires grad) but the
    loss is differentiable in its inputs. Only the layers up to the deepest one asked for are kept.
    """

    def __init__(self, weights: Optional[str] = "vgg19",
                 layers: Sequence[str] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"),
                 layer_weights: Sequence[float] = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0),
                 path=None) -> None:
        super().__init__()
        unknown = [name for name in layers if name not in VGG19_LAYERS]
        if unknown:
            raise ValueError(f"unknown VGG19 layers {unknown}; known: {sorted(VGG19_LAYERS)}")
        if len(layers) != len(layer_weights):
            raise ValueError(f"{len(layers)} layers but {len(layer_weights)} layer weights")
        self.weights_name = weights
        self.indices = [VGG19_LAYERS[name] for name in layers]
        self.layer_weights = [float(w) for w in layer_weights]
        self.features = vgg19_features(weights, path)[: max(self.indices) + 1]
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def train(self, mode: bool = True) -> "VGG19Perceptual":
        super().train(mode)
        self.features.eval()  # the loss network never changes mode
        return self

    def activations(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = (x - self.mean) / self.std
        out = []
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in self.indices:
                out.append(h)
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape != y.shape:
            raise ValueError(f"perceptual loss of images of shapes {tuple(x.shape)} and {tuple(y.shape)}")
        fx, fy = self.activations(x), self.activations(y.detach())
        return sum(w * (a - b).abs().mean() for w, a, b in zip(self.layer_weights, fx, fy))


class PatchDiscriminator(nn.Module):
    """pix2pix's PatchGAN: `n_layers` stride-2 4x4 convolutions, then two stride-1 ones -> 1 logit
    per patch (N x 1 x h x w). With n_layers = 3 each logit sees a 70 x 70 patch."""

    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2 ** n, 8)
            stride = 2 if n < n_layers else 1
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride, 1),
                       nn.InstanceNorm2d(ndf * mult), nn.LeakyReLU(0.2, True)]
        layers.append(nn.Conv2d(ndf * mult, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def lsgan_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Least-squares discriminator loss: 0.5 * (E[(D(real) - 1)^2] + E[D(fake)^2])."""
    return 0.5 * (((real_logits - 1) ** 2).mean() + (fake_logits ** 2).mean())


def lsgan_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Least-squares generator loss: E[(D(fake) - 1)^2]."""
    return ((fake_logits - 1) ** 2).mean()
