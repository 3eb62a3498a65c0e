"""LPIPS against the reference frames (`reference/metrics.md` §6.1), with the `lpips` package itself.

The network is ``lpips.LPIPS(net="alex", version="0.1")``: the v0.1 scaling layer, AlexNet's five
ReLU outputs (torchvision ``alexnet().features`` cut at [0:2], [2:5], [5:8], [8:10], [10:12]), unit
normalisation over channels, squared differences, the learned 1x1 "lin" heads, a spatial mean, and
the sum over the five layers. The lin heads ship in the lpips wheel (``weights/v0.1/alex.pth``) and
are loaded by the package. The AlexNet backbone is not in the wheel -- lpips would have torchvision
download it -- so the package is built with ``pnet_rand=True`` (nothing is fetched) and the backbone
weights are then loaded from torchvision's own file, ``alexnet-owt-7be5be79.pth``, found through
``core.weights.resolve("alexnet")``. Without that file the metric is unavailable (raised at
construction, with the command that fetches it).

The file is torchvision's state_dict: ``features.N.weight`` / ``features.N.bias`` for the convolutions
N = 0, 3, 6, 8, 10 (plus the classifier, which LPIPS does not use). lpips keeps torchvision's modules
under their original indices inside its slices (``slice1.0``, ``slice2.3``, ``slice3.6``,
``slice4.8``, ``slice5.10``), so each ``features.N.*`` tensor goes to the slice that holds module N;
the mapping is read from the lpips model, not written out by hand.

Inputs: uint8 RGB frames (or floats on the same 0-255 scale), mapped to [-1, 1] as x / 127.5 - 1
(lpips' input convention), NCHW float32 on ``self.device``. One value per frame, then the mean over
the clip's frames (the NeRF meters' convention). Lower is better; identical frames give 0.
Frames must be at least 31x31 pixels: AlexNet's 11x11 stride-4 convolution and two 3x3 stride-2
max-pools leave no pixel for conv3 below that.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from core import weights
from metrics import register
from core.types import ClipPair
from metrics.base import Metric
from core.errors import MetricError, MetricUnavailable, short_error
from metrics.image import prepare_frames

NETS = ("alex",)
MIN_SIZE = 31


def load_checkpoint(path: Path, what: str) -> dict[str, torch.Tensor]:
    """A state_dict of tensors from `path` (torch.load, weights only); MetricUnavailable if not."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file: the metric cannot run
        raise MetricUnavailable(f"{path} cannot be read as {what} ({short_error(exc)}); "
                                f"check it with `talkbench weights verify`") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise MetricUnavailable(f"{path} is not a state_dict of tensors ({what} expected)")
    return state


def alexnet_to_lpips_keys(net: torch.nn.Module, state: dict[str, torch.Tensor]
                          ) -> dict[str, torch.Tensor]:
    """torchvision AlexNet ``features.N.*`` tensors renamed to lpips' ``sliceK.N.*`` names.

    `net` is ``lpips.LPIPS(...).net`` (``lpips.pretrained_networks.alexnet``); its slices hold
    torchvision's feature modules under their original indices. Raises KeyError naming a missing
    tensor.
    """
    out = {}
    for slice_name, block in net.named_children():
        for index, module in block.named_children():
            for param in module.state_dict():
                out[f"{slice_name}.{index}.{param}"] = state[f"features.{index}.{param}"]
    return out


def build_lpips_alex(path: Path) -> torch.nn.Module:
    """``lpips.LPIPS(net='alex', version='0.1')`` with the AlexNet backbone read from `path`."""
    try:
        import lpips
    except ImportError as exc:
        raise MetricUnavailable(f"the lpips package is not installed ({exc}); "
                                f"`pip install lpips`") from exc

    state = load_checkpoint(path, "torchvision's AlexNet state_dict")
    with warnings.catch_warnings():
        # lpips passes torchvision's deprecated `pretrained=` argument; with pnet_rand=True it is
        # False, so torchvision builds an untrained AlexNet and fetches nothing.
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torchvision\..*")
        model = lpips.LPIPS(net="alex", version="0.1", pretrained=True, pnet_rand=True,
                            verbose=False)
    try:
        mapped = alexnet_to_lpips_keys(model.net, state)
        model.net.load_state_dict(mapped, strict=True)
    except (KeyError, RuntimeError) as exc:
        raise MetricUnavailable(f"{path} is not torchvision's AlexNet state_dict "
                                f"({short_error(exc)})") from exc
    return weights.frozen(model)


def frames_to_unit_range(frames: np.ndarray, device: str) -> torch.Tensor:
    """T x H x W x 3 on the 0-255 scale -> T x 3 x H x W float32 in [-1, 1] on `device`."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).to(device=device, dtype=torch.float32)
    return x.permute(0, 3, 1, 2) / 127.5 - 1.0


def check_range(frames: np.ndarray, side: str) -> None:
    if np.issubdtype(frames.dtype, np.floating) and (frames.min() < 0 or frames.max() > 255):
        raise MetricError(f"{side} frames range over [{frames.min():.4g}, {frames.max():.4g}]; "
                          f"expected uint8 or floats on the 0-255 scale")


@register
class LPIPS(Metric):
    """Mean over frames of LPIPS v0.1 (AlexNet) between predicted and reference frames."""

    name = "LPIPS"
    higher_is_better = False
    needs = ("frames",)
    level = "clip"
    defaults = {"net": "alex"}
    batch_size = 16  # frames per forward pass; does not change the value

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self.weights_path = weights.resolve("alexnet")
        self._model = build_lpips_alex(self.weights_path)

    def validate_params(self) -> None:
        if self.params["net"] not in NETS:
            raise ValueError(f"metric {self.name}: parameter 'net' must be one of {NETS} "
                             f"(the other lpips trunks' weights are not registered), "
                             f"got {self.params['net']!r}")

    def identity(self) -> dict:
        return {**super().identity(),
                "weights": {"alexnet": weights.fingerprint(self.weights_path)}}

    @property
    def model(self) -> torch.nn.Module:
        return self.on_device(self._model)

    def clip_value(self, pair: ClipPair) -> float:
        pred, ref = prepare_frames(pair, "rgb")
        h, w = pred.shape[1:3]
        if min(h, w) < MIN_SIZE:
            raise MetricError(f"frames are {w}x{h}; LPIPS (AlexNet) needs at least "
                              f"{MIN_SIZE}x{MIN_SIZE} pixels")
        check_range(pred, "prediction")
        check_range(ref, "reference")
        return float(np.mean(self.frame_values(pred, ref)))

    def frame_values(self, pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
        """LPIPS of each frame pair (T values)."""
        model, out = self.model, []
        with torch.no_grad():
            for start in range(0, pred.shape[0], self.batch_size):
                sl = slice(start, start + self.batch_size)
                p = frames_to_unit_range(pred[sl], self.device)
                r = frames_to_unit_range(ref[sl], self.device)
                out.append(model(p, r).reshape(-1).double().cpu().numpy())
        return np.concatenate(out)
