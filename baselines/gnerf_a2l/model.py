"""The audio-to-landmark transformer of the Gaussian-landmark NeRF (Ma et al., section IV-B).

    audio --wav2vec2 (E_aud)--> (B, T, D) --Linear--> f_a (B, T, d)
    landmarks (P x 3 per frame) --E_lm: Conv1d over points + [CLS] + TransformerEncoder--> (.., d)
    decoder input [E_lm(identity), E_lm(L_0) + s, ..., E_lm(L_{T-2}) + s]   (s = E_lm(identity))
      + periodic positional encoding (period p)
      -> N x [biased causal self-attention | + Linear(f_a[i]) | feed-forward]  (post-norm)
      -> Linear (zero-initialised) -> offset; L_i = identity + offset_i

FaceFormer's decoder layer has biased cross-modal attention whose alignment mask lets frame i see
only audio frame i; its attention weights are then exactly one-hot, so the block reduces to the
value and output projections applied to f_a[i]. The paper drops it for "a simple linear network";
`DecoderLayer.audio` is that linear map of the time-aligned audio token, added as a residual.
Table II's "w alignment bias" rows keep FaceFormer's block (`audio_attention="aligned"`:
`AlignedCrossAttention`), and its "ME" row replaces the transformer landmark encoder with the
flattened landmarks through Linear-ReLU-Linear (`MLPLandmarkEncoder`).

The self-attention bias is FaceFormer's ALiBi variant: head h adds `-m_h * floor((i - j) / p)` to
the score of query i on key j <= i (m_h: ALiBi's geometric slopes), and future keys are masked.
Masks are built for any length (FaceFormer's fixed 600-frame table overflows on longer clips),
attention is written out with explicit (batch, head) axes (no flattened `B * heads` mask whose
order can silently mismatch), and `generate` decodes autoregressively with a key/value cache:
each step runs one new token through the layers for the whole batch, O(T^2) in all instead of
FaceFormer's O(T^3) re-decoding of the whole prefix at every step.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from baselines.spear_a2l.model import sinusoid_table


def alibi_slopes(heads: int) -> torch.Tensor:
    """ALiBi's per-head slopes (Press et al.): 2^(-8/n * k) for a power of two n, interleaved otherwise."""
    def power_of_two(n: int) -> list[float]:
        start = 2.0 ** (-(2.0 ** -(math.log2(n) - 3)))
        return [start * start ** i for i in range(n)]

    if math.log2(heads).is_integer():
        slopes = power_of_two(heads)
    else:
        closest = 2 ** math.floor(math.log2(heads))
        slopes = power_of_two(closest) + power_of_two(2 * closest)[0::2][: heads - closest]
    return torch.tensor(slopes, dtype=torch.float32)


def biased_causal_bias(heads: int, length: int, period: int, device=None,
                       query_start: int = 0, queries: Optional[int] = None) -> torch.Tensor:
    """`heads x Q x K` additive attention bias: -slope * floor((i - j) / period) for j <= i, -inf for j > i.

    Rows are queries `query_start .. query_start + Q - 1` (default all `length`), columns keys 0..K-1
    with K = query_start + Q (a decoding step only needs its own row against the cache).
    """
    queries = length - query_start if queries is None else queries
    i = torch.arange(query_start, query_start + queries, device=device)[:, None]
    j = torch.arange(query_start + queries, device=device)[None, :]
    steps = torch.div(i - j, period, rounding_mode="floor").clamp(min=0).float()
    bias = -alibi_slopes(heads).to(device)[:, None, None] * steps[None]
    return bias.masked_fill((j > i)[None], float("-inf"))


class PeriodicPositionalEncoding(nn.Module):
    """Sinusoidal encoding of `t mod period` (FaceFormer's PPE), added to `B x T x d` inputs."""

    def __init__(self, d_model: int, period: int = 25, dropout: float = 0.1) -> None:
        super().__init__()
        self.period = int(period)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("table", sinusoid_table(self.period, d_model), persistent=False)

    def encoding(self, start: int, length: int) -> torch.Tensor:
        idx = torch.arange(start, start + length, device=self.table.device) % self.period
        return self.table[idx]

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        return self.dropout(x + self.encoding(start, x.shape[1])[None])


class BiasedSelfAttention(nn.Module):
    """Multi-head self-attention with an additive `heads x Q x K` bias and an optional key/value cache."""

    def __init__(self, d_model: int, heads: int, dropout: float = 0.1) -> None:
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model {d_model} is not divisible by {heads} heads")
        self.heads, self.head_dim = heads, d_model // heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, bias: torch.Tensor,
                cache: Optional[tuple[torch.Tensor, torch.Tensor]] = None):
        b, q_len, d = x.shape
        q, k, v = self.qkv(x).reshape(b, q_len, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if cache is not None:
            k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias[None].to(q.dtype),
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.out(out.transpose(1, 2).reshape(b, q_len, d)), (k, v)


class AlignedCrossAttention(nn.Module):
    """FaceFormer's biased cross-modal attention: queries are the decoder tokens, keys and values
    the audio features at the video rate, and the alignment mask lets frame i attend to audio
    frame i only (the paper's "alignment bias", Table II)."""

    def __init__(self, d_model: int, heads: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)

    def forward(self, x: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != audio.shape[1]:
            raise ValueError(f"aligned attention needs one audio frame per token: {x.shape[1]} tokens, "
                             f"{audio.shape[1]} audio frames")
        n = x.shape[1]
        mask = torch.full((n, n), float("-inf"), device=x.device, dtype=x.dtype).fill_diagonal_(0.0)
        return self.attn(x, audio, audio, attn_mask=mask, need_weights=False)[0]


class DecoderLayer(nn.Module):
    """Post-norm decoder layer: biased causal self-attention, aligned-audio linear (or, with
    `audio_attention="aligned"`, FaceFormer's aligned cross-attention), feed-forward."""

    def __init__(self, d_model: int, heads: int, ff: int, dropout: float = 0.1,
                 audio_attention: str = "linear") -> None:
        super().__init__()
        if audio_attention not in ("linear", "aligned"):
            raise ValueError(f"audio_attention must be linear or aligned, not {audio_attention!r}")
        self.attn = BiasedSelfAttention(d_model, heads, dropout)
        self.audio = (nn.Linear(d_model, d_model) if audio_attention == "linear"
                      else AlignedCrossAttention(d_model, heads, dropout))
        self.audio_attention = audio_attention
        self.ff = nn.Sequential(nn.Linear(d_model, ff), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff, d_model))
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d_model), nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.drop1, self.drop2, self.drop3 = nn.Dropout(dropout), nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, x, audio, bias, cache=None):
        attn, new_cache = self.attn(x, bias, cache)
        x = self.norm1(x + self.drop1(attn))
        a = self.audio(audio) if self.audio_attention == "linear" else self.audio(x, audio)
        x = self.norm2(x + self.drop2(a))
        x = self.norm3(x + self.drop3(self.ff(x)))
        return x, new_cache


class LandmarkEncoder(nn.Module):
    """E_lm: one frame's `P x 3` landmarks -> `d_model` (Fig. 2a).

    Conv1d(3 -> C, kernel 5, dilation 2) over the point axis, a learned [CLS] token in front, a
    sinusoidal position per token, a TransformerEncoder (GELU) and a linear map of the [CLS] output.
    """

    def __init__(self, points: int, d_model: int, channels: int = 512, heads: int = 16, layers: int = 2,
                 ff: int = 2048, dropout: float = 0.1, in_dims: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_dims, channels, kernel_size=5, dilation=2, padding=4)
        self.cls = nn.Parameter(torch.zeros(1, 1, channels))
        nn.init.normal_(self.cls, std=0.02)
        self.register_buffer("position", sinusoid_table(points + 1, channels), persistent=False)
        layer = nn.TransformerEncoderLayer(channels, heads, ff, dropout, activation="gelu", batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.proj = nn.Linear(channels, d_model)

    def forward(self, lmk: torch.Tensor) -> torch.Tensor:
        lead = lmk.shape[:-2]
        x = lmk.reshape(-1, *lmk.shape[-2:]).transpose(1, 2)  # (M, 3, P)
        x = self.conv(x).transpose(1, 2)  # (M, P, C)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.position[None]
        return self.proj(self.encoder(x)[:, 0]).reshape(*lead, -1)


class MLPLandmarkEncoder(nn.Module):
    """Table II's "ME": one frame's flattened `P x 3` landmarks through Linear-ReLU-Linear."""

    def __init__(self, points: int, d_model: int, hidden: int = 512, in_dims: int = 3) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(points * in_dims, hidden), nn.ReLU(), nn.Linear(hidden, d_model))

    def forward(self, lmk: torch.Tensor) -> torch.Tensor:
        return self.net(lmk.flatten(-2))


class GNerfA2L(nn.Module):
    """E_aud + E_lm + D_a2l. Landmarks are `B x T x P x 3` in the method's normalised coordinates.

    `forward(audio, identity, target)` is teacher-forced: frame i is predicted from the identity
    (start token), the ground truth of frames < i and the audio. `generate(audio, identity, T)`
    feeds back its own predictions. Both return `identity + offset` with the offset from a
    zero-initialised linear layer, so an untrained model outputs the identity landmarks.
    """

    def __init__(self, frontend: nn.Module, *, points: int, d_model: int = 64, heads: int = 4,
                 layers: int = 2, ff: int = 512, dropout: float = 0.1, period: int = 25,
                 lm_channels: int = 512, lm_heads: int = 16, lm_layers: int = 2, lm_ff: int = 2048,
                 lm_dropout: float = 0.1, landmark_encoder: str = "transformer",
                 audio_attention: str = "linear") -> None:
        super().__init__()
        self.frontend = frontend
        self.points, self.heads, self.period = int(points), int(heads), int(period)
        self.audio_proj = nn.Linear(int(frontend.dim), d_model)
        if landmark_encoder == "transformer":
            self.landmark_encoder = LandmarkEncoder(points, d_model, lm_channels, lm_heads, lm_layers, lm_ff,
                                                    lm_dropout)
        elif landmark_encoder == "mlp":
            self.landmark_encoder = MLPLandmarkEncoder(points, d_model, lm_channels)
        else:
            raise ValueError(f"landmark_encoder must be transformer or mlp, not {landmark_encoder!r}")
        self.ppe = PeriodicPositionalEncoding(d_model, period, dropout)
        self.layers = nn.ModuleList([DecoderLayer(d_model, heads, ff, dropout, audio_attention)
                                     for _ in range(layers)])
        self.output = nn.Linear(d_model, points * 3)
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)

    def encode_audio(self, audio: torch.Tensor, num_frames: int) -> torch.Tensor:
        return self.audio_proj(self.frontend(audio, num_frames))

    def decode(self, tokens: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """Teacher-forced pass over whole token sequences `B x T x d` -> hidden `B x T x d`."""
        x = self.ppe(tokens)
        bias = biased_causal_bias(self.heads, x.shape[1], self.period, x.device)
        for layer in self.layers:
            x, _ = layer(x, audio, bias)
        return x

    def _offsets(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.output(hidden).reshape(*hidden.shape[:-1], self.points, 3)

    def forward(self, audio: torch.Tensor, identity: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        num = target.shape[1]
        feats = self.encode_audio(audio, num)
        style = self.landmark_encoder(identity)[:, None]  # (B, 1, d)
        previous = self.landmark_encoder(target[:, :-1]) + style if num > 1 else style[:, :0]
        hidden = self.decode(torch.cat([style, previous], dim=1), feats)
        return identity[:, None] + self._offsets(hidden)

    @torch.no_grad()
    def generate(self, audio: torch.Tensor, identity: torch.Tensor, num_frames: int) -> torch.Tensor:
        """Autoregressive decoding with a per-layer key/value cache; the batch decodes together."""
        feats = self.encode_audio(audio, num_frames)
        style = self.landmark_encoder(identity)[:, None]
        caches: list[Optional[tuple[torch.Tensor, torch.Tensor]]] = [None] * len(self.layers)
        token, outputs = style, []
        for i in range(num_frames):
            x = self.ppe.dropout(token + self.ppe.encoding(i, 1)[None])
            bias = biased_causal_bias(self.heads, i + 1, self.period, x.device, query_start=i, queries=1)
            for n, layer in enumerate(self.layers):
                x, caches[n] = layer(x, feats[:, i:i + 1], bias, caches[n])
            frame = identity[:, None] + self._offsets(x)  # (B, 1, P, 3)
            outputs.append(frame)
            token = self.landmark_encoder(frame) + style
        return torch.cat(outputs, dim=1)


def smooth_l1_loss(pred: torch.Tensor, target: torch.Tensor, scale: float = 100.0) -> torch.Tensor:
    """The paper's eq. 2 (smooth L1, quadratic below 1) on coordinates multiplied by `scale`."""
    return F.smooth_l1_loss(pred * scale, target * scale, beta=1.0)
