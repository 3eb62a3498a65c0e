"""SPEAR's audio-to-landmark network (Cao & Tran, SPEAR, section 3.1), as torch modules.

    audio  --front-end (HuBERT layers 6/12/24)--> (B, T, L*H) --AudioFeatureEncoder--> (B, T, d)
    pose   (B, T, 6), relative to the identity frame --PoseEncoder-----------------> (B, T, d)
    reference landmarks (B, N_r, 68, 2), normalised --LandmarkSetEncoder-----------> (B, N_r, d)
    [ref | audio + PE | pose + PE] + modality embeddings --TransformerEncoder--> per-frame head
    --> (B, T, P, 2) lower-face points, as a residual on the reference's points.

`AudioFeatureEncoder` follows section 3.1.1: the stacked hidden states of each frame, `(L, H)`
(the paper's `(3, 1024)`), are a 1D signal with the L layers as channels; residual 1D-conv blocks
halve its length while the channels grow, then global average pooling gives one vector per frame.
`LandmarkSetEncoder` follows 3.1.2 (SpeechSyncNet's landmark encoder: 1D convolutions over the
point axis with the coordinates as channels, global average pooling). The token layout (reference
tokens, then audio tokens, then pose tokens, sinusoidal temporal position on audio and pose,
a learned modality embedding per stream) is IP_LAP's landmark transformer, which SPEAR's 57-of-131
point split comes from (reference/methods.md).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn


def sinusoid_table(length: int, dim: int, device=None) -> torch.Tensor:
    """`length x dim` sinusoidal position table (Vaswani et al.), sin on even, cos on odd features."""
    pos = torch.arange(length, dtype=torch.float32, device=device)[:, None]
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32, device=device) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim, device=device)
    table[:, 0::2] = torch.sin(pos * div)
    table[:, 1::2] = torch.cos(pos * div[: dim // 2])
    return table


def _groups(channels: int) -> int:
    for g in (8, 4, 2, 1):
        if channels % g == 0:
            return g
    return 1


class ResBlock1d(nn.Module):
    """conv(k3, stride) - GroupNorm - ReLU - conv(k3) - GroupNorm, plus a (1x1, stride) shortcut; ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(c_in, c_out, 3, stride=stride, padding=1)
        self.norm1 = nn.GroupNorm(_groups(c_out), c_out)
        self.conv2 = nn.Conv1d(c_out, c_out, 3, padding=1)
        self.norm2 = nn.GroupNorm(_groups(c_out), c_out)
        self.shortcut = (nn.Identity() if c_in == c_out and stride == 1 else
                         nn.Sequential(nn.Conv1d(c_in, c_out, 1, stride=stride), nn.GroupNorm(_groups(c_out), c_out)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


class AudioFeatureEncoder(nn.Module):
    """Per frame, `L` stacked hidden states of size `H` -> one `d_model` vector (section 3.1.1).

    Input `B x T x (L*H)` (the front-end's concatenation of layers, layer-major); each frame is
    reshaped to `(L, H)` and run through residual blocks with stride 2 while the signal is longer
    than `min_length` (the temporal axis of the paper's description is the feature axis here: the
    frames themselves are independent), then averaged over the remaining length.
    """

    def __init__(self, num_layers: int, hidden: int, channels: Sequence[int], d_model: int,
                 min_length: int = 4) -> None:
        super().__init__()
        self.num_layers, self.hidden = int(num_layers), int(hidden)
        blocks, c_in, length = [], self.num_layers, self.hidden
        for c in channels:
            stride = 2 if length > min_length else 1
            blocks.append(ResBlock1d(c_in, int(c), stride))
            c_in, length = int(c), (length + stride - 1) // stride
        self.blocks = nn.Sequential(*blocks)
        self.proj = nn.Linear(c_in, d_model)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        b, t, d = feats.shape
        if d != self.num_layers * self.hidden:
            raise ValueError(f"audio features have {d} dims, expected {self.num_layers} x {self.hidden}")
        x = feats.reshape(b * t, self.num_layers, self.hidden)
        x = self.blocks(x).mean(dim=-1)
        return self.proj(x).reshape(b, t, -1)


class LandmarkSetEncoder(nn.Module):
    """One landmark set `(..., N, 2)` -> `(..., d_model)` (SpeechSyncNet's landmark encoder, 3.1.2).

    The N points are a 1D signal with the 2 coordinates as channels: a stem conv, residual blocks
    (stride 2 after the first), global average pooling over the points, a linear projection.
    """

    def __init__(self, channels: Sequence[int], d_model: int, in_dims: int = 2) -> None:
        super().__init__()
        channels = [int(c) for c in channels]
        self.stem = nn.Sequential(nn.Conv1d(in_dims, channels[0], 3, padding=1),
                                  nn.GroupNorm(_groups(channels[0]), channels[0]), nn.ReLU())
        blocks, c_in = [], channels[0]
        for i, c in enumerate(channels):
            blocks.append(ResBlock1d(c_in, c, stride=1 if i == 0 else 2))
            c_in = c
        self.blocks = nn.Sequential(*blocks)
        self.proj = nn.Linear(c_in, d_model)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        lead = points.shape[:-2]
        x = points.reshape(-1, *points.shape[-2:]).transpose(1, 2)  # (M, dims, N)
        x = self.blocks(self.stem(x)).mean(dim=-1)
        return self.proj(x).reshape(*lead, -1)


class PoseEncoder(nn.Module):
    """Head pose per frame `(B, T, pose_dims)` -> `(B, T, d_model)`.

    SPEAR feeds the upper-face ("pose") landmarks of the driving frames; a talkbench method gets the
    pose itself (yaw, pitch, roll, tx, ty, tz), so a per-frame MLP lifts it to `d_model` and residual
    temporal convolutions (kernel 3) add the local context the landmark encoder's 1D convs give.
    """

    def __init__(self, d_model: int, pose_dims: int = 6, temporal_blocks: int = 2) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(pose_dims, d_model), nn.ReLU(), nn.Linear(d_model, d_model))
        self.blocks = nn.Sequential(*[ResBlock1d(d_model, d_model) for _ in range(temporal_blocks)])

    def forward(self, pose: torch.Tensor) -> torch.Tensor:
        x = self.mlp(pose).transpose(1, 2)
        return self.blocks(x).transpose(1, 2)


class SpearA2L(nn.Module):
    """The whole audio-to-landmark stage. `frontend` is an `AudioFrontend` (B x S -> B x T x dim).

    `forward(audio, pose, reference)` with audio `B x S` (16 kHz, exactly the frames' samples),
    pose `B x T x 6` (normalised, relative to the identity frame), reference `B x N_r x 68 x 2`
    (normalised landmarks) returns `B x T x P x 2`: the reference's first set's `points` plus the
    predicted displacement, in the same normalised coordinates.
    """

    def __init__(self, frontend: nn.Module, *, frontend_layers: int, points: Sequence[int],
                 d_model: int = 512, heads: int = 4, layers: int = 4, ff: int = 1024, dropout: float = 0.1,
                 audio_channels: Sequence[int] = (32, 64, 128, 256, 512),
                 landmark_channels: Sequence[int] = (64, 128, 256, 512), pose_blocks: int = 2,
                 max_frames: int = 4096) -> None:
        super().__init__()
        self.frontend = frontend
        self.points = tuple(int(p) for p in points)
        self.register_buffer("point_index", torch.tensor(self.points, dtype=torch.long), persistent=False)
        dim = int(frontend.dim)
        if dim % frontend_layers:
            raise ValueError(f"front-end dim {dim} is not a multiple of its {frontend_layers} stacked layers")
        self.audio_encoder = AudioFeatureEncoder(frontend_layers, dim // frontend_layers, audio_channels, d_model)
        self.pose_encoder = PoseEncoder(d_model, 6, pose_blocks)
        self.reference_encoder = LandmarkSetEncoder(landmark_channels, d_model)
        self.modality = nn.Embedding(3, d_model)  # 0 reference, 1 audio, 2 pose
        self.norm = nn.LayerNorm(d_model)
        self.register_buffer("position", sinusoid_table(max_frames, d_model), persistent=False)
        layer = nn.TransformerEncoderLayer(d_model, heads, ff, dropout, batch_first=True)
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(2 * d_model, len(self.points) * 2)
        nn.init.normal_(self.head.weight, std=1e-3)
        nn.init.zeros_(self.head.bias)

    def forward(self, audio: torch.Tensor, pose: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        b, t = pose.shape[:2]
        if t > self.position.shape[0]:
            raise ValueError(f"{t} frames exceed the position table ({self.position.shape[0]})")
        if reference.ndim == 3:
            reference = reference[:, None]
        pe = self.position[:t][None]
        aud = self.audio_encoder(self.frontend(audio, t)) + pe + self.modality.weight[1]
        pos = self.pose_encoder(pose) + pe + self.modality.weight[2]
        ref = self.reference_encoder(reference) + self.modality.weight[0]
        tokens = self.norm(torch.cat([ref, aud, pos], dim=1))
        out = self.transformer(tokens)
        n_ref = ref.shape[1]
        fused = torch.cat([out[:, n_ref:n_ref + t], out[:, n_ref + t:]], dim=-1)
        disp = self.head(fused).reshape(b, t, len(self.points), 2)
        return reference[:, 0, self.point_index][:, None] + disp


def spear_loss(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SPEAR's eq. 5 and 6 on `B x F x N x 2`: (L_mse, L_v).

    L_mse = mean over frames of the squared norm of the whole landmark vector (sum over points and
    coordinates); L_v = mean over frame pairs and points of the squared norm of the velocity error.
    Averaged over the batch.
    """
    mse = ((pred - target) ** 2).sum(dim=(-1, -2)).mean()
    if pred.shape[1] < 2:
        return mse, pred.new_zeros(())
    vel = (pred[:, 1:] - pred[:, :-1]) - (target[:, 1:] - target[:, :-1])
    return mse, (vel ** 2).sum(dim=-1).mean()
