"""FD2Talk's networks: the motion DiTs (stage 1), the lip expert, and the two-condition latent
diffusion UNet with its reference-conditioned decoder (stage 2). See the package docstring for
what follows the paper and what is talkbench's choice.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


# ----------------------------------------------------------------------------- stage 1: DiTs

def alignment_mask(frames: int, audio_frames: int, k: int) -> torch.Tensor:
    """Bool `frames x audio_frames`, True where motion frame i may attend audio frame j: |i - j| <= k
    (paper section 3.2; k = 3)."""
    i = torch.arange(frames)[:, None]
    j = torch.arange(audio_frames)[None, :]
    return (i - j).abs() <= int(k)


class DiTBlock(nn.Module):
    """Pre-norm transformer block: self-attention over the motion frames, cross-attention from the
    motion frames (queries) to tau(c) (keys / values) under the alignment mask, feed-forward."""

    def __init__(self, d: int, heads: int, ff: int, dropout: float) -> None:
        super().__init__()
        self.n1, self.n2, self.n3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.self_attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.ff = nn.Sequential(nn.Linear(d, ff), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff, d))

    def forward(self, x, cond, blocked: Optional[torch.Tensor]):
        h = self.n1(x)
        x = x + self.self_attn(h, h, h, need_weights=False)[0]
        h = self.n2(x)
        x = x + self.cross_attn(h, cond, cond, attn_mask=blocked, need_weights=False)[0]
        return x + self.ff(self.n3(x))


class MotionDiT(nn.Module):
    """A sequence-to-sequence diffusion transformer: noisy motion x_t (B x F x D), timestep t and
    audio features (B x F x A) -> predicted x_0 (B x F x D).

    c = [timestep embedding, audio features] per frame, tau(c) = Linear(c) (B x F x d), fed to every
    block by cross-attention; `align` applies the alignment mask (the `no_align` ablation drops it).
    """

    def __init__(self, dim: int, audio_dim: int, d_model: int, layers: int, heads: int, ff: int,
                 max_len: int, k: int, align: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        from diffusers.models.embeddings import TimestepEmbedding, Timesteps

        self.k, self.align = int(k), bool(align)
        self.time_proj = Timesteps(d_model, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = TimestepEmbedding(d_model, d_model)
        self.tau = nn.Linear(d_model + audio_dim, d_model)
        self.x_in = nn.Linear(dim, d_model)
        self.pos = nn.Parameter(torch.zeros(1, max_len, d_model))
        nn.init.normal_(self.pos, std=0.02)
        self.blocks = nn.ModuleList(DiTBlock(d_model, heads, ff, dropout) for _ in range(layers))
        self.out = nn.Sequential(nn.LayerNorm(d_model), nn.Linear(d_model, dim))

    def forward(self, x_t, t, audio):
        B, T, _ = x_t.shape
        if T > self.pos.shape[1]:
            raise ValueError(f"MotionDiT: {T} frames, the model's sequence length is {self.pos.shape[1]}")
        temb = self.time_embed(self.time_proj(t.reshape(-1)).to(x_t.dtype))  # B x d
        c = torch.cat([temb[:, None].expand(-1, audio.shape[1], -1), audio], dim=-1)
        cond = self.tau(c)
        h = self.x_in(x_t) + self.pos[:, :T]
        blocked = ~alignment_mask(T, audio.shape[1], self.k).to(x_t.device) if self.align else None
        for block in self.blocks:
            h = block(h, cond, blocked)
        return self.out(h)


# ----------------------------------------------------------------------------- lip expert

class LipExpert(nn.Module):
    """A SyncNet-style expert on `window` frames: mouth points (B x W x P x 2, from beta through the
    fitted basis) and the same frames' MFCCs (B x W x C) -> non-negative embeddings; P_sync is their
    cosine similarity (Eq. 10)."""

    def __init__(self, points: int, audio_dim: int, window: int, hidden: int, embed: int) -> None:
        super().__init__()
        self.window = int(window)
        self.mouth = nn.Sequential(nn.Flatten(), nn.Linear(window * points * 2, hidden), nn.ReLU(),
                                   nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, embed), nn.ReLU())
        self.audio = nn.Sequential(nn.Flatten(), nn.Linear(window * audio_dim, hidden), nn.ReLU(),
                                   nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, embed), nn.ReLU())

    def p_sync(self, mouth, audio):
        v, a = self.mouth(mouth), self.audio(audio)
        return (v * a).sum(-1) / torch.clamp(v.norm(dim=-1) * a.norm(dim=-1), min=1e-6)


def sync_loss(p_sync: torch.Tensor) -> torch.Tensor:
    """Eq. 11: -log P_sync (P clamped away from 0)."""
    return -torch.log(p_sync.clamp(min=1e-6)).mean()


def expert_bce(p_sync: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Wav2Lip's expert objective: binary cross-entropy of the cosine similarity."""
    return F.binary_cross_entropy(p_sync.clamp(1e-6, 1 - 1e-6), label)


# ----------------------------------------------------------------------------- stage 2: UNet

class TwoConditionProcessor(nn.Module):
    """A diffusers attention processor for the UNet's cross-attention layers with two conditions.

    `encoder_hidden_states` holds the motion tokens phi1 (the first `n_motion`) followed by the
    reference-latent tokens phi2. The layer's own to_k / to_v attend to phi1; a second pair
    (to_k2 / to_v2, owned by this processor) attends to phi2 with the same queries; the two results
    are added before the output projection. With `separate=False` (the `concat_cond` ablation) the
    processor is diffusers' plain cross-attention over the concatenated tokens.
    """

    def __init__(self, query_dim: int, cross_dim: int, n_motion: int, separate: bool = True) -> None:
        super().__init__()
        self.n_motion, self.separate = int(n_motion), bool(separate)
        if self.separate:
            self.to_k2 = nn.Linear(cross_dim, query_dim, bias=False)
            self.to_v2 = nn.Linear(cross_dim, query_dim, bias=False)

    def _attend(self, attn, q, k, v):
        B = q.shape[0]
        heads = attn.heads
        split = lambda x: x.view(B, -1, heads, x.shape[-1] // heads).transpose(1, 2)  # noqa: E731
        out = F.scaled_dot_product_attention(split(q), split(k), split(v))
        return out.transpose(1, 2).reshape(B, -1, heads * out.shape[-1])

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        if encoder_hidden_states is None:
            raise ValueError("TwoConditionProcessor is for cross-attention layers only")
        shape = hidden_states.shape
        if hidden_states.ndim == 4:
            hidden_states = hidden_states.flatten(2).transpose(1, 2)
        q = attn.to_q(hidden_states)
        if self.separate:
            motion, ref = encoder_hidden_states[:, :self.n_motion], encoder_hidden_states[:, self.n_motion:]
            out = self._attend(attn, q, attn.to_k(motion), attn.to_v(motion))
            out = out + self._attend(attn, q, self.to_k2(ref), self.to_v2(ref))
        else:
            out = self._attend(attn, q, attn.to_k(encoder_hidden_states), attn.to_v(encoder_hidden_states))
        out = attn.to_out[1](attn.to_out[0](out))
        if len(shape) == 4:
            out = out.transpose(1, 2).reshape(shape)
        return out


class FrameDenoiser(nn.Module):
    """The stage-2 denoiser: UNet2DConditionModel on J_t, conditioned per block on phi1 (the frame's
    motion [beta, p] projected to `motion_tokens` tokens) and phi2 (the reference latent, cut into
    2 x 2 patches and projected to tokens with a learned position embedding). Predicts J_0, by
    default as the reference latent plus the UNet's output (`residual`, talkbench's choice: the
    target frame differs from the reference by the motion, so the UNet learns that difference)."""

    def __init__(self, latent_channels: int, latent_size: int, motion_dim: int, channels: tuple,
                 cross_dim: int, head_dim: int, layers_per_block: int, motion_tokens: int,
                 separate: bool = True, norm_groups: int = 8, residual: bool = True) -> None:
        super().__init__()
        from diffusers import UNet2DConditionModel

        n = len(channels)
        self.unet = UNet2DConditionModel(
            sample_size=latent_size, in_channels=latent_channels, out_channels=latent_channels,
            down_block_types=("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1),
            block_out_channels=tuple(channels), layers_per_block=layers_per_block,
            cross_attention_dim=cross_dim, attention_head_dim=head_dim, norm_num_groups=norm_groups)
        self.motion_tokens, self.residual = int(motion_tokens), bool(residual)
        self.phi1 = nn.Sequential(nn.Linear(motion_dim, cross_dim), nn.SiLU(),
                                  nn.Linear(cross_dim, cross_dim * self.motion_tokens))
        self.phi2 = nn.Conv2d(latent_channels, cross_dim, kernel_size=2, stride=2)
        self.ref_pos = nn.Parameter(torch.zeros(1, (latent_size // 2) ** 2, cross_dim))
        nn.init.normal_(self.ref_pos, std=0.02)
        processors = {}
        for name, proc in self.unet.attn_processors.items():
            if name.endswith("attn2.processor"):
                module = self.unet.get_submodule(name[:-len(".processor")])
                processors[name] = TwoConditionProcessor(module.to_q.out_features, cross_dim,
                                                         self.motion_tokens, separate)
            else:
                processors[name] = proc
        self.unet.set_attn_processor(processors)

    def condition(self, motion, ref_latent):
        B = motion.shape[0]
        m = self.phi1(motion).view(B, self.motion_tokens, -1)
        r = self.phi2(ref_latent).flatten(2).transpose(1, 2) + self.ref_pos
        return torch.cat([m, r], dim=1)

    def forward(self, j_t, t, motion, ref_latent):
        """Predicted J_0 = reference latent + the UNet's output (`residual`) or the UNet's output."""
        out = self.unet(j_t, t, encoder_hidden_states=self.condition(motion, ref_latent)).sample
        return ref_latent + out if self.residual else out


def widen_decoder_input(vae) -> None:
    """Replace the decoder's first convolution so it takes [denoised latent, reference latent]
    (2 x latent channels); the new input's weights start as the old ones on the first half and
    zero on the reference half, so the widened decoder starts as the pretrained one."""
    old = vae.decoder.conv_in
    new = nn.Conv2d(old.in_channels * 2, old.out_channels, old.kernel_size, old.stride, old.padding)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, :old.in_channels] = old.weight
        new.bias.copy_(old.bias)
    vae.decoder.conv_in = new
    # post_quant_conv maps the latent channels before the decoder; it must see both halves
    pq = vae.post_quant_conv
    if isinstance(pq, nn.Conv2d):
        wide = nn.Conv2d(pq.in_channels * 2, pq.out_channels * 2, 1)
        with torch.no_grad():
            wide.weight.zero_()
            wide.bias.zero_()
            c = pq.in_channels
            wide.weight[:c, :c] = pq.weight
            wide.weight[c:, c:] = pq.weight
            wide.bias[:c] = pq.bias
            wide.bias[c:] = pq.bias
        vae.post_quant_conv = wide


def decode_with_reference(vae, latent, ref_latent, scaling: float):
    """D([J_0, x]) in [0, 1] (not clamped)."""
    z = torch.cat([latent, ref_latent], dim=1) / scaling
    return (vae.decode(z).sample + 1) / 2
