"""The networks of TCSAN + Audio2AU (paper section 3.1): identity encoder, audio encoder, Audio2AU,
the fusion modules (TCSAN and the Table 3 alternatives), the U-Net image decoder and the AU
classifier, plus the AU losses (Eq. 5-7). Widths are config values; `baselines.tcsan` says which."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

NUM_AUS = 5  # AU10, AU14, AU20, AU25, AU26
AU_FEATURE = 64  # per-AU feature of Audio2AU after its last FC is removed: 5 x 64 = 320
MFCC_SHAPE = (12, 28)  # 12 coefficients (no energy) x 28 steps of 10 ms
IMAGE = 112


class IdentityEncoder(nn.Module):
    """Four stride-2 3x3 convolutions (ReLU) 112 -> 56 -> 28 -> 14 -> 7, then FC -> `dim`. Returns
    (f_id, skips) with the four feature maps for the decoder's U-Net skips (largest first)."""

    def __init__(self, width: int, dim: int = 512) -> None:
        super().__init__()
        chans = [3, width, 2 * width, 4 * width, 8 * width]
        self.convs = nn.ModuleList(nn.Conv2d(chans[i], chans[i + 1], 3, 2, 1) for i in range(4))
        self.fc = nn.Linear(chans[-1] * 7 * 7, dim)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips, h = [], image
        for conv in self.convs:
            h = F.relu(conv(h))
            skips.append(h)
        return F.relu(self.fc(h.flatten(1))), skips


class AudioEncoder(nn.Module):
    """Five 3x3 convolutions with BN + ReLU on a 1 x 12 x 28 MFCC window (two of them stride 2:
    12 x 28 -> 6 x 14 -> 3 x 7), then two FCs -> `dim`."""

    def __init__(self, width: int, dim: int = 512) -> None:
        super().__init__()
        spec = [(1, width, 1), (width, width, 2), (width, 2 * width, 1), (2 * width, 2 * width, 2),
                (2 * width, 4 * width, 1)]
        self.convs = nn.Sequential(*[layer for cin, cout, s in spec for layer in
                                     (nn.Conv2d(cin, cout, 3, s, 1), nn.BatchNorm2d(cout), nn.ReLU())])
        self.fc = nn.Sequential(nn.Linear(4 * width * 3 * 7, dim), nn.ReLU(), nn.Linear(dim, dim), nn.ReLU())

    def forward(self, mfcc: torch.Tensor) -> torch.Tensor:  # N x 12 x 28 -> N x dim
        return self.fc(self.convs(mfcc[:, None]).flatten(1))


class Audio2AU(nn.Module):
    """A 3x3 convolution over frequency and time, then one over the whole frequency axis (12 x 1),
    leaving a 28-step sequence; two LSTM layers; three FCs, the last one per AU (64 -> 1 for each of
    the five). `features` stops before the last FC: the 5 x 64 = 320-d input of the fusion."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.conv_ft = nn.Conv2d(1, width, 3, 1, 1)
        self.conv_f = nn.Conv2d(width, width, (MFCC_SHAPE[0], 1))
        self.lstm = nn.LSTM(width, hidden, num_layers=2, batch_first=True)
        self.fc1 = nn.Linear(hidden, 256)
        self.fc2 = nn.Linear(256, NUM_AUS * AU_FEATURE)
        self.head_w = nn.Parameter(torch.randn(NUM_AUS, AU_FEATURE) / AU_FEATURE ** 0.5)
        self.head_b = nn.Parameter(torch.zeros(NUM_AUS))

    def features(self, mfcc: torch.Tensor) -> torch.Tensor:  # N x 12 x 28 -> N x 320
        h = F.relu(self.conv_f(F.relu(self.conv_ft(mfcc[:, None]))))  # N x C x 1 x 28
        out, _ = self.lstm(h[:, :, 0].transpose(1, 2))
        return F.relu(self.fc2(F.relu(self.fc1(out[:, -1]))))

    def head(self, feats: torch.Tensor) -> torch.Tensor:  # N x 320 -> N x 5 logits
        return (feats.view(-1, NUM_AUS, AU_FEATURE) * self.head_w).sum(-1) + self.head_b

    def forward(self, mfcc: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(mfcc))


class FrameAttention(nn.Module):
    """Multi-head self-attention (Q = K = V) among the elements of one frame's feature (paper:
    "weights to different elements of the cross-modal features in the frame"): the `dim`-d vector is
    cut into `tokens` tokens of dim / tokens, attended with `heads` heads and put back. It never
    mixes frames, so the temporal receptive field is the convolutions' alone."""

    def __init__(self, dim: int, tokens: int, heads: int) -> None:
        super().__init__()
        if dim % tokens or (dim // tokens) % heads:
            raise ValueError(f"attention: {dim} features do not split into {tokens} tokens of {heads} heads")
        self.tokens = tokens
        self.att = nn.MultiheadAttention(dim // tokens, heads, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # B x T x D
        b, t, d = x.shape
        z = x.reshape(b * t, self.tokens, d // self.tokens)
        out, _ = self.att(z, z, z, need_weights=False)
        return out.reshape(b, t, d)


class CoAttention(nn.Module):
    """Multi-head co-attention (Table 3's Co-att): audio tokens attend to identity tokens and
    identity tokens to audio tokens, per frame; the two results replace the two streams."""

    def __init__(self, dim: int, tokens: int, heads: int) -> None:
        super().__init__()
        self.tokens = tokens
        self.a2i = nn.MultiheadAttention(dim // tokens, heads, batch_first=True)
        self.i2a = nn.MultiheadAttention(dim // tokens, heads, batch_first=True)

    def forward(self, f_id: torch.Tensor, f_a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, t, d = f_a.shape
        a = f_a.reshape(b * t, self.tokens, d // self.tokens)
        i = f_id.reshape(b * t, self.tokens, d // self.tokens)
        a2, _ = self.a2i(a, i, i, need_weights=False)
        i2, _ = self.i2a(i, a, a, need_weights=False)
        return f_id + i2.reshape(b, t, d), f_a + a2.reshape(b, t, d)


class TemporalBlock(nn.Module):
    """One residual block: a non-causal dilated convolution (kernel k, dilation d, symmetric
    padding, Eq. 1) + ReLU, optionally followed by per-frame multi-head self-attention (the
    residual attention block of Fig. 5); LayerNorm per frame, residual connection."""

    def __init__(self, dim: int, kernel: int, dilation: int, attention: Optional[FrameAttention]) -> None:
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, kernel, dilation=dilation, padding=dilation * (kernel - 1) // 2)
        self.attention = attention
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # B x T x D
        z = F.relu(self.conv(x.transpose(1, 2))).transpose(1, 2)
        if self.attention is not None:
            z = z + self.attention(z)
        return self.norm(x + z)


class TemporalConvNet(nn.Module):
    """`depth` residual blocks, dilation 2^(n-1) in block n (TCSAN when `attention`, plain TCN when
    not). Receptive field: 1 + (k - 1) * (2^depth - 1) frames (`receptive_field`)."""

    def __init__(self, dim: int, depth: int, kernel: int = 3, attention: bool = True, tokens: int = 8,
                 heads: int = 4) -> None:
        super().__init__()
        if kernel % 2 != 1:
            raise ValueError(f"the non-causal convolution needs an odd kernel, got {kernel}")
        self.kernel, self.depth = kernel, depth
        self.blocks = nn.ModuleList(
            TemporalBlock(dim, kernel, 2 ** n, FrameAttention(dim, tokens, heads) if attention else None)
            for n in range(depth))

    @property
    def receptive_field(self) -> int:
        return receptive_field(self.depth, self.kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


def receptive_field(depth: int, kernel: int = 3) -> int:
    return 1 + (kernel - 1) * (2 ** depth - 1)


class Fusion(nn.Module):
    """The fusion of f_id ⊕ f_a (⊕ f_au): a linear projection to `dim`, then by `kind`:
    "tcsan" (TCSAN), "tcn" (TCN without attention), "mhatt_tcn" (one per-frame multi-head
    self-attention, then the TCN), "coatt_tcn" (multi-head co-attention between the identity and
    audio streams before the projection, then the TCN), "gru" (a two-layer bidirectional GRU)."""

    KINDS = ("tcsan", "tcn", "mhatt_tcn", "coatt_tcn", "gru")

    def __init__(self, kind: str, in_dim: int, dim: int, depth: int, tokens: int, heads: int,
                 stream_dim: int = 512) -> None:
        super().__init__()
        if kind not in self.KINDS:
            raise ValueError(f"unknown fusion {kind!r}; known: {list(self.KINDS)}")
        self.kind = kind
        self.coatt = CoAttention(stream_dim, tokens, heads) if kind == "coatt_tcn" else None
        self.proj = nn.Linear(in_dim, dim)
        self.mhatt = FrameAttention(dim, tokens, heads) if kind == "mhatt_tcn" else None
        if kind == "gru":
            self.gru = nn.GRU(dim, dim // 2, num_layers=2, batch_first=True, bidirectional=True)
        else:
            self.tcn = TemporalConvNet(dim, depth, 3, kind == "tcsan", tokens, heads)

    def forward(self, f_id: torch.Tensor, f_a: torch.Tensor, f_au: Optional[torch.Tensor]) -> torch.Tensor:
        if self.coatt is not None:
            f_id, f_a = self.coatt(f_id, f_a)
        parts = [f_id, f_a] + ([f_au] if f_au is not None else [])
        x = self.proj(torch.cat(parts, dim=-1))
        if self.mhatt is not None:
            x = x + self.mhatt(x)
        if self.kind == "gru":
            return self.gru(x)[0]
        return self.tcn(x)


class ImageDecoder(nn.Module):
    """FC -> 8w x 7 x 7, then six transposed convolutions: four stride-2 (7 -> 112), each fed the
    identity encoder's map of its input size (U-Net skip, concatenated), and two stride-1 ones; a
    sigmoid gives RGB in [0, 1]."""

    def __init__(self, in_dim: int, width: int, skip_width: int) -> None:
        super().__init__()
        w, s = width, skip_width  # skips have 8s, 4s, 2s, s channels at 7, 14, 28, 56 px
        self.fc = nn.Linear(in_dim, 8 * w * 7 * 7)
        self.width = w
        # (in channels incl. skip, out channels)
        self.ups = nn.ModuleList([nn.ConvTranspose2d(8 * w + 8 * s, 4 * w, 4, 2, 1),  # 7 -> 14
                                  nn.ConvTranspose2d(4 * w + 4 * s, 2 * w, 4, 2, 1),  # 14 -> 28
                                  nn.ConvTranspose2d(2 * w + 2 * s, w, 4, 2, 1),  # 28 -> 56
                                  nn.ConvTranspose2d(w + s, w, 4, 2, 1)])  # 56 -> 112
        self.refine = nn.ConvTranspose2d(w, w, 3, 1, 1)
        self.out = nn.ConvTranspose2d(w, 3, 3, 1, 1)

    def forward(self, f: torch.Tensor, skips: list[torch.Tensor],
                base: Optional[torch.Tensor] = None) -> torch.Tensor:
        """RGB in [0, 1]; with `base` (the identity image, N x 3 x 112 x 112) the decoder's output is
        a change of it, base + tanh(x / 2) clamped to [0, 1], instead of sigmoid(x)."""
        h = F.relu(self.fc(f)).view(-1, 8 * self.width, 7, 7)
        for up, skip in zip(self.ups, reversed(skips)):
            h = F.relu(up(torch.cat([h, skip], dim=1)))
        x = self.out(F.relu(self.refine(h)))
        if base is None:
            return torch.sigmoid(x)
        return (base + torch.tanh(x / 2)).clamp(0, 1)


class AUClassifier(nn.Module):
    """Four 3x3 convolutions (ReLU), a 2x2 max-pool after every two, three FCs; on the lower half of
    the 112 x 112 face (56 x 112). Returns logits (sigmoid gives the occurrence probabilities)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(3, w, 3, 2, 1), nn.ReLU(), nn.Conv2d(w, w, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, 1, 1), nn.ReLU(), nn.Conv2d(2 * w, 2 * w, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2))
        self.fc = nn.Sequential(nn.Linear(2 * w * 7 * 14, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(),
                                nn.Linear(64, NUM_AUS))

    def forward(self, image: torch.Tensor) -> torch.Tensor:  # N x 3 x 112 x 112 (whole face)
        return self.fc(self.features(lower_half(image)).flatten(1))


def lower_half(image: torch.Tensor) -> torch.Tensor:
    return image[..., image.shape[-2] // 2:, :]


def upper_half(image: torch.Tensor) -> torch.Tensor:
    return image[..., : image.shape[-2] // 2, :]


def class_weights(rates: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Eq. 5's w_i = n (1 / r_i) / sum_j (1 / r_j), r_i the AU's occurrence rate in the training set
    (clamped to [eps, 1] so an AU that never occurs gets a large but finite weight)."""
    inv = 1.0 / rates.clamp(min=eps, max=1.0)
    return len(rates) * inv / inv.sum()


def weighted_bce(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Eq. 5, averaged over the frames."""
    per = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")  # N x 5
    return (per * weights).mean()


def weighted_dice(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor,
                  eps: float = 1.0) -> torch.Tensor:
    """Eq. 6, averaged over the frames (smooth term eps)."""
    p = torch.sigmoid(logits)
    dice = 1 - (2 * labels * p + eps) / (labels ** 2 + p ** 2 + eps)
    return (dice * weights).mean()


def au_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Eq. 7: L_au = L_bce + L_dice."""
    return weighted_bce(logits, labels, weights) + weighted_dice(logits, labels, weights)


class TCSANNet(nn.Module):
    """The generator: identity encoder + audio encoder (+ Audio2AU features) -> fusion -> decoder.
    The AU classifier rides along (it is fine-tuned with L_au) but does not take part in `forward`."""

    def __init__(self, cfg) -> None:
        super().__init__()
        self.identity = IdentityEncoder(cfg.id_width, cfg.feature_dim)
        self.audio = AudioEncoder(cfg.audio_width, cfg.feature_dim)
        self.audio2au = Audio2AU(cfg.a2au_width, cfg.a2au_hidden) if cfg.use_audio2au else None
        in_dim = 2 * cfg.feature_dim + (NUM_AUS * AU_FEATURE if cfg.use_audio2au else 0)
        self.fusion = Fusion(cfg.fusion, in_dim, cfg.fusion_dim, cfg.tcsan_depth, cfg.att_tokens,
                             cfg.att_heads, cfg.feature_dim)
        self.decoder = ImageDecoder(cfg.fusion_dim, cfg.dec_width, cfg.id_width)
        self.au_classifier = AUClassifier(cfg.au_width) if cfg.use_au_loss else None
        self.identity_residual = bool(cfg.identity_residual)

    def forward(self, identity: torch.Tensor, mfcc: torch.Tensor, chunk: int = 0) -> torch.Tensor:
        """identity B x 3 x 112 x 112 in [0, 1], mfcc B x T x 12 x 28 -> frames B x T x 3 x 112 x 112.
        `chunk` > 0 decodes that many frames at a time (inference on long clips)."""
        b, t = mfcc.shape[:2]
        f_id, skips = self.identity(identity)
        flat = mfcc.reshape(b * t, *mfcc.shape[2:])
        f_a = self.audio(flat).view(b, t, -1)
        f_au = self.audio2au.features(flat).view(b, t, -1) if self.audio2au is not None else None
        f_t = self.fusion(f_id[:, None].expand(b, t, -1), f_a, f_au)
        step = chunk if chunk > 0 else t
        out = []
        for k in range(0, t, step):
            n = min(step, t - k)
            sk = [s[:, None].expand(b, n, *s.shape[1:]).reshape(b * n, *s.shape[1:]) for s in skips]
            base = identity[:, None].expand(b, n, *identity.shape[1:]).reshape(b * n, *identity.shape[1:])
            out.append(self.decoder(f_t[:, k:k + n].reshape(b * n, -1), sk,
                                    base if self.identity_residual else None).view(b, n, 3, IMAGE, IMAGE))
        return torch.cat(out, dim=1)
