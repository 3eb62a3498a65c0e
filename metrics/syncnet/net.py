"""The SyncNet network, its checkpoint formats and the shared loaded network.

Written from the prose description of joonson/syncnet_python's ``SyncNetModel.py`` (class ``S``);
no code is copied. The evaluation that uses it is in `metrics.syncnet.features`, the metrics in
`metrics.syncnet.metrics`.

Network (class `SyncNet`, alias `S`)
------------------------------------
Two streams that map 0.2 s of audio and 0.2 s of video to 1024-d embeddings (NOT L2-normalised).
Submodule names and Sequential indices equal the original's, so the official ``syncnet_v2.model``
(a dict of tensors keyed ``netcnnaud.0.weight`` ... ``netfclip.3.bias``) loads with
``load_state_dict(strict=True)``. ReLUs and pools have no parameters but keep their index slots.

* ``netcnnaud`` (2-D, input N x 1 x 13 x 20: 13 MFCCs x 20 MFCC frames):
  0 conv 1->64 3x3 pad 1, 1 BN, 2 ReLU, 3 maxpool 1x1 stride 1 (an identity slot);
  4 conv 64->192 3x3 pad 1, 5 BN, 6 ReLU, 7 maxpool 3x3 stride (1,2)        -> 11 x 9;
  8 conv 192->384 3x3 pad 1, 9 BN, 10 ReLU;
  11 conv 384->256 3x3 pad 1, 12 BN, 13 ReLU;
  14 conv 256->256 3x3 pad 1, 15 BN, 16 ReLU, 17 maxpool 3x3 stride 2      -> 5 x 4;
  18 conv 256->512 kernel (5,4) no pad, 19 BN, 20 ReLU                       -> 1 x 1.
* ``netcnnlip`` (3-D, input N x 3 x 5 x 224 x 224, BGR 0-255):
  0 conv 3->96 kernel (5,7,7) stride (1,2,2) no pad, 1 BN, 2 ReLU,
  3 maxpool (1,3,3) stride (1,2,2)                                           -> 1 x 54 x 54;
  4 conv 96->256 (1,5,5) stride (1,2,2) pad (0,1,1), 5 BN, 6 ReLU,
  7 maxpool (1,3,3) stride (1,2,2) pad (0,1,1)                               -> 1 x 13 x 13;
  8, 11, 14 conv 256->256 (1,3,3) pad (0,1,1), each + BN + ReLU (9-10, 12-13, 15-16);
  17 maxpool (1,3,3) stride (1,2,2)                                          -> 1 x 6 x 6;
  18 conv 256->512 (1,6,6) no pad, 19 BN, 20 ReLU                            -> 1 x 1 x 1.
* ``netfcaud`` and ``netfclip``: 0 linear 512->512, 1 BN1d, 2 ReLU, 3 linear 512->1024.

Where the choices come from: the 5-frame (5,7,7)/(1,2,2) first lip convolution and the 512->512->1024
FC stacks are stated in metrics.md §1.1; the remaining kernels, strides, paddings, pools and the
BN after every convolution and after the first linear layer are those of ``SyncNetModel.py``
(checked against public copies of that file). They are also the only ones that make the shapes
close: the audio stream must end at 1 x 1 from 13 x 20 and the lip stream at 1 x 1 x 1 from
5 x 224 x 224 so that the flattened feature has the 512 entries the first linear layer takes
(`tests/test_metrics_syncnet.py` checks both). The official file predates BatchNorm's
``num_batches_tracked`` buffer; torch fills a missing one in on load (BN state version < 2), so
strict loading accepts the file with or without those entries.

Checkpoints: the official ``syncnet_v2.model`` is a bare state dict; a talkbench SyncNet expert
(bench/experts.py) is the same layer list at a reduced width, saved with its config by `save_expert`.
`load_syncnet` reads both. One loaded network per weights file is shared by the three metrics
(`shared_model`).
"""

from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn as nn

from core.errors import MetricUnavailable, short_error
from core.weights import frozen

EMBEDDING_DIM = 1024


# ----------------------------------------------------------------------------------- network
class SyncNet(nn.Module):
    """joonson's SyncNet ``S``: `forward_aud` (N x 1 x 13 x 20) and `forward_lip`
    (N x 3 x 5 x 224 x 224) -> N x 1024 embeddings. Layer list: see the module docstring."""

    def __init__(self, embedding_dim: int = EMBEDDING_DIM, width: float = 1.0) -> None:
        super().__init__()
        # `width` scales every channel count (talkbench's SyncNet experts train a narrow copy of
        # the same layer list on CPU, bench/experts.py); width 1 is the official network.
        if not (isinstance(width, (int, float)) and 0 < width <= 1):
            raise ValueError(f"SyncNet width must be in (0, 1], got {width!r}")
        self.width, self.embedding_dim = float(width), int(embedding_dim)

        def ch(n: int) -> int:
            return max(1, int(round(n * width)))

        def conv2d(cin: int, cout: int, kernel, pad) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, kernel, stride=1, padding=pad), nn.BatchNorm2d(cout),
                    nn.ReLU(inplace=True)]

        def conv3d(cin: int, cout: int, kernel, stride, pad) -> list[nn.Module]:
            return [nn.Conv3d(cin, cout, kernel, stride=stride, padding=pad), nn.BatchNorm3d(cout),
                    nn.ReLU(inplace=True)]

        def fc(dim: int) -> nn.Sequential:
            return nn.Sequential(nn.Linear(ch(512), ch(512)), nn.BatchNorm1d(ch(512)), nn.ReLU(),
                                 nn.Linear(ch(512), dim))

        self.netcnnaud = nn.Sequential(
            *conv2d(1, ch(64), (3, 3), (1, 1)),                      # 0-2
            nn.MaxPool2d((1, 1), stride=(1, 1)),                 # 3
            *conv2d(ch(64), ch(192), (3, 3), (1, 1)),                    # 4-6
            nn.MaxPool2d((3, 3), stride=(1, 2)),                 # 7
            *conv2d(ch(192), ch(384), (3, 3), (1, 1)),                   # 8-10
            *conv2d(ch(384), ch(256), (3, 3), (1, 1)),                   # 11-13
            *conv2d(ch(256), ch(256), (3, 3), (1, 1)),                   # 14-16
            nn.MaxPool2d((3, 3), stride=(2, 2)),                 # 17
            *conv2d(ch(256), ch(512), (5, 4), (0, 0)),                   # 18-20
        )
        self.netfcaud = fc(embedding_dim)
        self.netfclip = fc(embedding_dim)
        self.netcnnlip = nn.Sequential(
            *conv3d(3, ch(96), (5, 7, 7), (1, 2, 2), 0),             # 0-2
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2)),           # 3
            *conv3d(ch(96), ch(256), (1, 5, 5), (1, 2, 2), (0, 1, 1)),   # 4-6
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),  # 7
            *conv3d(ch(256), ch(256), (1, 3, 3), 1, (0, 1, 1)),          # 8-10
            *conv3d(ch(256), ch(256), (1, 3, 3), 1, (0, 1, 1)),          # 11-13
            *conv3d(ch(256), ch(256), (1, 3, 3), 1, (0, 1, 1)),          # 14-16
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2)),           # 17
            *conv3d(ch(256), ch(512), (1, 6, 6), 1, 0),                  # 18-20
        )

    def forward_aud(self, x: torch.Tensor) -> torch.Tensor:
        mid = self.netcnnaud(x)
        return self.netfcaud(mid.reshape(mid.shape[0], -1))

    def forward_lip(self, x: torch.Tensor) -> torch.Tensor:
        mid = self.netcnnlip(x)
        return self.netfclip(mid.reshape(mid.shape[0], -1))


S = SyncNet  # the original's class name


class Embedder(Protocol):
    def forward_aud(self, x: torch.Tensor) -> torch.Tensor: ...

    def forward_lip(self, x: torch.Tensor) -> torch.Tensor: ...


# A talkbench SyncNet expert checkpoint (bench/experts.py): a torch-saved dict
# {"format": EXPERT_FORMAT, "config": {...}, "state_dict": {...}}; the architecture keys of the
# config (`EXPERT_ARCH_KEYS`) rebuild the narrow network. Official files are bare state dicts.
EXPERT_FORMAT = "talkbench-syncnet-expert-v1"
EXPERT_ARCH_KEYS = ("width", "embedding_dim")


def save_expert(path: Path | str, model: SyncNet, config: dict[str, Any]) -> None:
    """Write an expert checkpoint atomically (temporary file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arch = {"width": model.width, "embedding_dim": model.embedding_dim}
    for key, value in arch.items():
        if key in config and config[key] != value:
            raise ValueError(f"expert config says {key}={config[key]!r} but the network has {value!r}")
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    # Saved to memory first: torch.save names the zip's root folder after the file, so writing to
    # the file directly would make the bytes (and sha256) depend on the file name.
    buffer = io.BytesIO()
    torch.save({"format": EXPERT_FORMAT, "config": {**config, **arch}, "state_dict": state}, buffer)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(buffer.getvalue())
    tmp.replace(path)


def read_expert_config(path: Path | str) -> dict[str, Any]:
    """The config saved with an expert checkpoint (MetricUnavailable if `path` is not one)."""
    blob = _torch_load(Path(path))
    if not (isinstance(blob, dict) and blob.get("format") == EXPERT_FORMAT):
        raise MetricUnavailable(f"{path} is not a talkbench SyncNet expert checkpoint")
    return dict(blob["config"])


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated or foreign file
        raise MetricUnavailable(f"{path} cannot be read as a SyncNet state dict ({short_error(exc)}); "
                                f"check it with `talkbench weights verify`") from exc


def load_syncnet(path: Path | str) -> SyncNet:
    """A `SyncNet` in eval mode with the state dict in `path` loaded strictly.

    The file is a torch-saved dict of tensors under the original module names (``syncnet_v2.model``
    and files saved with ``torch.save(model.state_dict())``), built at width 1 -- or a talkbench
    expert checkpoint (`save_expert`), whose saved config gives the width and embedding size.
    MetricUnavailable if it cannot be read or does not match the architecture.
    """
    path = Path(path)
    state = _torch_load(path)
    arch: dict[str, Any] = {}
    if isinstance(state, dict) and state.get("format") == EXPERT_FORMAT:
        config = state.get("config")
        if not isinstance(config, dict) or any(k not in config for k in EXPERT_ARCH_KEYS):
            raise MetricUnavailable(f"{path}: expert checkpoint without {list(EXPERT_ARCH_KEYS)} "
                                    f"in its config")
        arch = {k: config[k] for k in EXPERT_ARCH_KEYS}
        state = state.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise MetricUnavailable(f"{path} is not a dict of tensors (a SyncNet state dict expected)")
    try:
        model = SyncNet(**arch)
    except (TypeError, ValueError) as exc:
        raise MetricUnavailable(f"{path}: bad expert architecture {arch} ({exc})") from exc
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        where = f" at {arch}" if arch else ""
        raise MetricUnavailable(f"{path} does not match the SyncNet architecture{where} "
                                f"({short_error(exc, 500)})") from exc
    return frozen(model)


# ----------------------------------------------------------------------------------- shared state
@lru_cache(maxsize=2)
def shared_model(path: str, sha256: str) -> SyncNet:
    """One loaded network per weights file (LSE-D, LSE-C and AV-offset share it)."""
    return load_syncnet(path)
