"""The KFusion of Dual-Domain network (see the package docstring for the paper mapping and choices)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from baselines.audio_frontends import build_frontend
from baselines.kan import KAN

MOUTH = slice(48, 68)  # L_m: iBUG-68 mouth points 48-67
N_POINTS, N_MOUTH = 68, 20


class ConvPosition(nn.Module):
    """Relative position information: a depthwise temporal convolution added to the tokens.

    Training sees short windows and inference whole clips of any length, so absolute position
    encodings (which would meet unseen positions) are avoided; wav2vec2 does the same.
    """

    def __init__(self, d: int, kernel: int = 5) -> None:
        super().__init__()
        self.conv = nn.Conv1d(d, d, kernel, padding=kernel // 2, groups=d)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # B x T x d
        return x + self.act(self.conv(x.transpose(1, 2))).transpose(1, 2)


class AudioEncoder(nn.Module):
    """E: input projection, relative positions, a Transformer encoder over the frame sequence."""

    def __init__(self, in_dim: int, d: int, heads: int, layers: int, ff: int, dropout: float) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(in_dim, d), nn.LayerNorm(d))
        self.pos = ConvPosition(d)
        layer = nn.TransformerEncoderLayer(d, heads, ff, dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(d), enable_nested_tensor=False)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.pos(self.proj(feats)))


class IdentityDecoder(nn.Module):
    """D(Conv(E(x)), v): identity-guided Transformer decoder -> landmark-shaped features B x T x 2P.

    The query of frame t is Conv(E(x))_t multiplied element-wise by the embedded identity
    landmarks v (Sec. 3.2: the Conv "transforms the features x to be suitable for multiplication with
    the features v within the Decoder"); the memory is E(x).
    """

    def __init__(self, points: int, d: int, heads: int, layers: int, ff: int, dropout: float) -> None:
        super().__init__()
        self.identity = nn.Linear(2 * points, d)
        self.conv = nn.Conv1d(d, d, 3, padding=1)
        layer = nn.TransformerDecoderLayer(d, heads, ff, dropout, batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, layers, norm=nn.LayerNorm(d))
        self.out = nn.Linear(d, 2 * points)

    def forward(self, memory: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        query = self.conv(memory.transpose(1, 2)).transpose(1, 2) * self.identity(identity).unsqueeze(1)
        return self.out(self.decoder(query, memory))


class LSTMBranch(nn.Module):
    """A bidirectional LSTM over the content features -> landmark-shaped features B x T x 2P."""

    def __init__(self, in_dim: int, hidden: int, points: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(in_dim, hidden, batch_first=True, bidirectional=True)
        self.out = nn.Linear(2 * hidden, 2 * points)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.lstm(x)[0])


class Bottleneck(nn.Module):
    """B: Conv(k=1) -> Conv(k=3) -> Conv(k=1) over the (time, landmark) grid, ReLU between."""

    def __init__(self, c_in: int, hidden: int, c_out: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(c_in, hidden, 1), nn.ReLU(),
                                 nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(hidden, c_out, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _grid(streams: list[torch.Tensor], points: int) -> torch.Tensor:
    """Concatenate B x T x 2P streams (Eq. 8/9) as channels of a B x (2 n) x T x P grid (x, y per stream)."""
    b, t, _ = streams[0].shape
    x = torch.stack(streams, dim=1).reshape(b, len(streams), t, points, 2)
    return x.permute(0, 1, 4, 2, 3).reshape(b, len(streams) * 2, t, points)


class KFusionNet(nn.Module):
    """Audio + identity landmarks + emotion -> per-frame landmark displacements (normalised frame)."""

    def __init__(self, cfg: Any) -> None:
        super().__init__()
        if not (cfg.use_global or cfg.use_lstm):
            raise ValueError("kfusion: disabling both the Global Domain and the LSTM branches leaves no "
                             "mouth features")
        if cfg.head not in ("kan", "mlp"):
            raise ValueError(f"kfusion: head must be kan or mlp, not {cfg.head!r}")
        if cfg.fusion_mlp and cfg.use_kfusion:
            raise ValueError("kfusion: fusion_mlp replaces the KFusion block; it needs use_kfusion=False")
        self.cfg = cfg
        d, heads, ff, drop = cfg.d_model, cfg.heads, cfg.ff_dim, cfg.dropout
        # Content Domain: wav2vec2 features scaled by a learned emotion vector (Eq. 7).
        self.content_frontend = build_frontend(cfg.content_frontend, cfg.content_frontend_config)
        dw = self.content_frontend.dim
        self.emotion = nn.Embedding(8, dw)
        nn.init.ones_(self.emotion.weight)  # starts as "x' = wav2vec2(x)"; training shapes each emotion
        self.content_encoder = AudioEncoder(dw, d, heads, cfg.enc_layers, ff, drop)
        self.content_decoder = IdentityDecoder(N_POINTS, d, heads, cfg.dec_layers, ff, drop)
        if cfg.use_lstm:
            self.lstm_face = LSTMBranch(dw, cfg.lstm_hidden, N_POINTS)
            self.lstm_mouth = LSTMBranch(dw, cfg.lstm_hidden, N_MOUTH)
        # Global Domain: a Transformer encoder on the audio signal's own features, two decoders.
        if cfg.use_global:
            if cfg.global_frontend == "content":
                self.global_frontend = None  # shares the content front-end's features (official code)
                dg = dw
            else:
                self.global_frontend = build_frontend(cfg.global_frontend, cfg.global_frontend_config)
                dg = self.global_frontend.dim
            self.global_encoder = AudioEncoder(dg, d, heads, cfg.enc_layers, ff, drop)
            self.global_face = IdentityDecoder(N_POINTS, d, heads, cfg.dec_layers, ff, drop)
            self.global_mouth = IdentityDecoder(N_MOUTH, d, heads, cfg.dec_layers, ff, drop)
        n_face = 1 + int(cfg.use_global) + int(cfg.use_lstm)  # ct (+ gb) (+ ct_f)
        n_mouth = int(cfg.use_global) + int(cfg.use_lstm)  # (gb_m) (+ ct_m)
        if cfg.use_kfusion:
            self.fuse_face = Bottleneck(2 * n_face, cfg.fusion_hidden, 2)
            self.fuse_face_residual = nn.Conv2d(2 * n_face, 2, 1)
            self.fuse_mouth = Bottleneck(2 * n_mouth, cfg.fusion_hidden, 2)
        elif cfg.fusion_mlp:  # repl MLP, the caption's reading: a per-frame MLP replaces the block
            n_in = n_face * 2 * N_POINTS + n_mouth * 2 * N_MOUTH
            self.fuse_mlp = nn.Sequential(nn.Linear(n_in, cfg.fusion_hidden), nn.SiLU(),
                                          nn.Linear(cfg.fusion_hidden, 2 * N_POINTS))
        else:  # w/o KFusion: one per-frame linear map of all branch outputs, concatenated
            self.fuse_linear = nn.Linear(n_face * 2 * N_POINTS + n_mouth * 2 * N_MOUTH, 2 * N_POINTS)
        widths = [N_POINTS, cfg.head_hidden, N_POINTS]
        if cfg.head == "kan":
            self.head = KAN(widths, grid_size=cfg.kan_grid, spline_order=cfg.kan_order)
        else:  # repl MLP: the same widths with SiLU between
            self.head = nn.Sequential(nn.Linear(widths[0], widths[1]), nn.SiLU(), nn.Linear(widths[1], widths[2]))

    def forward(self, audio: torch.Tensor, identity: torch.Tensor, emotion: torch.Tensor,
                num_frames: int) -> torch.Tensor:
        """audio B x S (16 kHz), identity B x 68 x 2 (normalised), emotion B (indices) -> B x T x 68 x 2."""
        b = audio.shape[0]
        v = identity.reshape(b, 2 * N_POINTS)
        v_m = identity[:, MOUTH].reshape(b, 2 * N_MOUTH)
        content = self.content_frontend(audio, num_frames)
        scaled = content * self.emotion(emotion).unsqueeze(1)  # x' = wav2vec2(x) x w
        face = [self.content_decoder(self.content_encoder(scaled), v)]  # ct
        mouth = []
        if self.cfg.use_global:
            feats = content if self.global_frontend is None else self.global_frontend(audio, num_frames)
            memory = self.global_encoder(feats)
            face.append(self.global_face(memory, v))  # gb
            mouth.append(self.global_mouth(memory, v_m))  # gb_m
        if self.cfg.use_lstm:
            face.append(self.lstm_face(scaled))  # ct_f
            mouth.append(self.lstm_mouth(scaled))  # ct_m
        if self.cfg.use_kfusion:
            xf, xm = _grid(face, N_POINTS), _grid(mouth, N_MOUTH)
            fused = self.fuse_face(xf) + self.fuse_face_residual(xf)  # Eq. 10
            fused = torch.cat([fused[..., :MOUTH.start], self.fuse_mouth(xm), fused[..., MOUTH.stop:]], -1)  # Eq. 11
        else:
            fuse = self.fuse_mlp if self.cfg.fusion_mlp else self.fuse_linear
            flat = fuse(torch.cat(face + mouth, dim=-1))  # B x T x 136
            fused = flat.reshape(b, num_frames, N_POINTS, 2).permute(0, 3, 1, 2)
        out = self.head(fused)  # B x 2 x T x 68: the head maps each coordinate row of 68 values (Eq. 12)
        return out.permute(0, 2, 3, 1)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


__all__ = ["KFusionNet", "MOUTH", "count_parameters"]
