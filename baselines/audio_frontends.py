"""Audio features at the video frame rate: MFCC and the self-supervised speech encoders.

`build_frontend(kind, config)` returns an `AudioFrontend` (an `nn.Module`) whose
`forward(audio, num_frames)` maps a batch of 16 kHz waveforms `B x S` to features `B x T x D`
with `T = num_frames`, and whose `.dim` is `D`. Every front-end computes its features at its own
rate (MFCC: 100 Hz; wav2vec2-family: 50 Hz) and resamples them to the video frames by linear
interpolation over time with the end points aligned (`align_corners=True`), as FaceFormer and
GeneFace do.

Kinds and their config keys (all optional):

- `mfcc`: a torch implementation (no librosa) — pre-emphasis, 25 ms Hann window, 10 ms hop,
  `n_mels` (40) triangular mel filters (HTK mel scale), natural log, orthonormal DCT-II keeping
  `n_mfcc` (13) coefficients, plus `deltas` (2) orders of regression deltas over +-2 frames.
  `normalize`: "mean" (per-utterance cepstral mean, the default), "meanvar" or "none".
- `wav2vec2`, `hubert`, `wav2vec2_conformer`, `unispeech`: transformers' `Wav2Vec2Model`,
  `HubertModel`, `Wav2Vec2ConformerModel`, `UniSpeechModel`.
  `pretrained`: None -> a small random model built from `hidden_size` (48), `num_layers` (2),
  `num_heads` (4), `intermediate_size` (2 x hidden), `conv_dim` (32, an int or a list of 7),
  trained from scratch with the method; or a hub name / local folder -> `from_pretrained`.
  A name is looked up as a local folder, then under `$TALKBENCH_HOME/weights/hf/<name>`, then in
  the transformers cache (downloaded there when the hub is reachable); with `HF_HUB_OFFLINE=1`
  and no local copy, `FrontendUnavailable` names the model and how to get it.
  `layers`: hidden-state indices to use (0 = the transformer's input, i = layer i's output,
  negative from the end; default: the last hidden state), combined by `layer_combine`
  ("concat" along features, or "mean"). `freeze`: "none", "feature_encoder" (the CNN on the raw
  waveform, as FaceFormer does) or "all" (no gradients, always in eval mode); True means
  "feature_encoder". `normalize` (True): zero-mean unit-variance per waveform, as the
  wav2vec2 feature extractor does. `spec_augment` (False): transformers' time masking draws from
  numpy's global generator, which would break the trainer's seeded determinism, so it is off
  unless asked for. `resample`: "after" (default) runs the whole encoder at 50 Hz and resamples
  its output to the video frames; "before" resamples the CNN features to the video frames and runs
  the feature projection and the transformer at the video rate, as FaceFormer's wav2vec2 does (its
  `linear_interpolation` between the feature extractor and the encoder).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from core.constants import SAMPLE_RATE
import torch
import torch.nn.functional as F
from torch import nn

HF_KINDS = ("wav2vec2", "hubert", "wav2vec2_conformer", "unispeech")
KINDS = ("mfcc",) + HF_KINDS


class FrontendUnavailable(RuntimeError):
    """Pretrained weights a front-end needs are not on this machine (and could not be fetched)."""


def resample_to_frames(features: torch.Tensor, num_frames: int) -> torch.Tensor:
    """`B x N x D` features -> `B x num_frames x D` by linear interpolation over time (ends aligned)."""
    if features.shape[1] == num_frames:
        return features
    if features.shape[1] == 1:
        return features.expand(-1, num_frames, -1)
    out = F.interpolate(features.transpose(1, 2), size=num_frames, mode="linear", align_corners=True)
    return out.transpose(1, 2)


class AudioFrontend(nn.Module):
    """Base: `forward(audio B x S, num_frames) -> B x num_frames x dim`."""

    kind: str = ""
    dim: int = 0

    def features(self, audio: torch.Tensor) -> torch.Tensor:
        """Features at the front-end's own rate, `B x N x dim`."""
        raise NotImplementedError

    def forward(self, audio: torch.Tensor, num_frames: int) -> torch.Tensor:
        if audio.ndim != 2:
            raise ValueError(f"{self.kind}: audio must be B x S, got shape {tuple(audio.shape)}")
        return resample_to_frames(self.features(audio), int(num_frames))


# ----------------------------------------------------------------------------- MFCC

def _hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def _mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(n_mels: int, n_fft: int, sample_rate: int, fmin: float = 20.0,
                   fmax: Optional[float] = None) -> np.ndarray:
    """Triangular filters on the HTK mel scale, `n_mels x (n_fft // 2 + 1)`, each peaking at 1."""
    fmax = fmax or sample_rate / 2
    bins = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None] - lower) / (centre - lower)
    falling = (upper - bins[None]) / (upper - centre)
    return np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)


def dct_matrix(n_mfcc: int, n_mels: int) -> np.ndarray:
    """Orthonormal DCT-II, `n_mels x n_mfcc` (so `log_mel @ D` gives the cepstrum)."""
    n = np.arange(n_mels)[:, None]
    k = np.arange(n_mfcc)[None]
    basis = np.cos(np.pi / n_mels * (n + 0.5) * k) * math.sqrt(2.0 / n_mels)
    basis[:, 0] /= math.sqrt(2.0)
    return basis.astype(np.float32)


def deltas(x: torch.Tensor, width: int = 2) -> torch.Tensor:
    """Regression deltas over +-width frames of `B x N x D` (edges repeated), as HTK / librosa."""
    pad = torch.cat([x[:, :1].expand(-1, width, -1), x, x[:, -1:].expand(-1, width, -1)], dim=1)
    n = x.shape[1]
    num = sum(k * (pad[:, width + k:width + k + n] - pad[:, width - k:width - k + n]) for k in range(1, width + 1))
    return num / (2 * sum(k * k for k in range(1, width + 1)))


class MFCCFrontend(AudioFrontend):
    kind = "mfcc"

    def __init__(self, n_mfcc: int = 13, n_mels: int = 40, deltas: int = 2, n_fft: int = 512,
                 win_length: int = 400, hop_length: int = 160, preemphasis: float = 0.97,
                 normalize: str = "mean", sample_rate: int = SAMPLE_RATE) -> None:
        super().__init__()
        if not 1 <= n_mfcc <= n_mels:
            raise ValueError(f"mfcc: need 1 <= n_mfcc ({n_mfcc}) <= n_mels ({n_mels})")
        if normalize not in ("none", "mean", "meanvar"):
            raise ValueError(f"mfcc: normalize must be none, mean or meanvar, not {normalize!r}")
        self.n_fft, self.win_length, self.hop_length = n_fft, win_length, hop_length
        self.preemphasis, self.normalize, self.orders = preemphasis, normalize, int(deltas)
        self.dim = n_mfcc * (1 + self.orders)
        self.register_buffer("window", torch.hann_window(win_length, periodic=True), persistent=False)
        self.register_buffer("mel", torch.from_numpy(mel_filterbank(n_mels, n_fft, sample_rate)), persistent=False)
        self.register_buffer("dct", torch.from_numpy(dct_matrix(n_mfcc, n_mels)), persistent=False)

    def features(self, audio: torch.Tensor) -> torch.Tensor:
        x = audio.float()
        if self.preemphasis:
            x = torch.cat([x[:, :1], x[:, 1:] - self.preemphasis * x[:, :-1]], dim=1)
        if x.shape[1] < self.n_fft // 2 + 1:  # reflect padding needs more than half a frame
            x = F.pad(x, (0, self.n_fft // 2 + 1 - x.shape[1]))
        spec = torch.stft(x, self.n_fft, self.hop_length, self.win_length, self.window, center=True,
                          pad_mode="reflect", return_complex=True)
        power = spec.real ** 2 + spec.imag ** 2  # B x F x N
        logmel = torch.log(torch.matmul(self.mel, power) + 1e-6)  # B x M x N
        ceps = torch.matmul(logmel.transpose(1, 2), self.dct)  # B x N x C
        if self.normalize != "none":
            ceps = ceps - ceps.mean(dim=1, keepdim=True)
            if self.normalize == "meanvar":
                ceps = ceps / (ceps.std(dim=1, keepdim=True) + 1e-5)
        feats = [ceps]
        for _ in range(self.orders):
            feats.append(deltas(feats[-1]))
        return torch.cat(feats, dim=-1)


# ----------------------------------------------------------------------------- transformers encoders

def _hf_classes(kind: str):
    import transformers as tf

    return {
        "wav2vec2": (tf.Wav2Vec2Config, tf.Wav2Vec2Model),
        "hubert": (tf.HubertConfig, tf.HubertModel),
        "wav2vec2_conformer": (tf.Wav2Vec2ConformerConfig, tf.Wav2Vec2ConformerModel),
        "unispeech": (tf.UniSpeechConfig, tf.UniSpeechModel),
    }[kind]


def tiny_config(kind: str, hidden_size: int = 48, num_layers: int = 2, num_heads: int = 4,
                intermediate_size: Optional[int] = None, conv_dim: int | Sequence[int] = 32,
                num_conv_pos_embeddings: int = 16, num_conv_pos_embedding_groups: int = 4, **extra: Any):
    """A small random-initialised config of `kind`, wav2vec2-base's conv strides (320-sample hop, 50 Hz)."""
    config_cls, _ = _hf_classes(kind)
    conv = tuple(conv_dim) if isinstance(conv_dim, (list, tuple)) else (int(conv_dim),) * 7
    if len(conv) != 7:
        raise ValueError(f"{kind}: conv_dim needs 7 entries (one per CNN layer), got {len(conv)}")
    kwargs = dict(hidden_size=hidden_size, num_hidden_layers=num_layers, num_attention_heads=num_heads,
                  intermediate_size=intermediate_size or 2 * hidden_size, conv_dim=conv,
                  conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2),
                  num_conv_pos_embeddings=num_conv_pos_embeddings,
                  num_conv_pos_embedding_groups=num_conv_pos_embedding_groups,
                  hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0,
                  layerdrop=0.0, vocab_size=32)
    if kind == "wav2vec2_conformer":
        kwargs.update(conv_depthwise_kernel_size=7)
    kwargs.update(extra)
    return config_cls(**kwargs)


def resolve_pretrained(name: str | os.PathLike, kind: str = "wav2vec2") -> str:
    """A local folder for `name` if there is one, else `name` itself (a hub id for the cache)."""
    text = str(name)
    path = Path(text).expanduser()
    if path.exists():
        return str(path)
    if path.is_absolute() or text.startswith((".", "~")) or text.count("/") > 1:
        raise FrontendUnavailable(
            f"{kind}: pretrained audio encoder folder {text} does not exist; pass a folder written by "
            f"save_pretrained (config.json + weights) or a hub name such as facebook/wav2vec2-base-960h")
    from core.paths import talkbench_home

    local = talkbench_home() / "weights" / "hf" / text
    return str(local) if local.exists() else text


def _unavailable_message(kind: str, name: str, model_cls: type, exc: Exception) -> str:
    return (f"{kind}: pretrained weights {name!r} are not available on this machine ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}). Get them with network access, e.g. "
            f"`python -c \"import transformers; transformers.{model_cls.__name__}.from_pretrained('{name}')\"` "
            f"(fills the Hugging Face cache) or `hf download {name} --local-dir "
            f"$TALKBENCH_HOME/weights/hf/{name}`, or pass a local folder as `pretrained`")


class HFSpeechFrontend(AudioFrontend):
    """A transformers speech encoder (`Wav2Vec2Model` and relatives) as a frame-rate front-end."""

    def __init__(self, kind: str, pretrained: Optional[str] = None, layers: Optional[Sequence[int]] = None,
                 layer_combine: str = "concat", freeze: str | bool = "none", normalize: bool = True,
                 spec_augment: bool = False, resample: str = "after", **sizes: Any) -> None:
        super().__init__()
        self.kind = kind
        if resample not in ("after", "before"):
            raise ValueError(f"{kind}: resample must be after or before (the transformer), not {resample!r}")
        self.resample = resample
        config_cls, model_cls = _hf_classes(kind)
        if freeze is True:
            freeze = "feature_encoder"
        elif freeze is False or freeze is None:
            freeze = "none"
        if freeze not in ("none", "feature_encoder", "all"):
            raise ValueError(f"{kind}: freeze must be none, feature_encoder or all, not {freeze!r}")
        if layer_combine not in ("concat", "mean"):
            raise ValueError(f"{kind}: layer_combine must be concat or mean, not {layer_combine!r}")
        if pretrained is None:
            self.encoder = model_cls(tiny_config(kind, **sizes))
        else:
            if sizes:
                raise ValueError(f"{kind}: sizes {sorted(sizes)} only apply to a random model, "
                                 f"not to pretrained {pretrained!r}")
            source = resolve_pretrained(pretrained, kind)
            try:
                self.encoder = model_cls.from_pretrained(source)
            except (OSError, ValueError) as exc:
                raise FrontendUnavailable(_unavailable_message(kind, str(pretrained), model_cls, exc)) from exc
        cfg = self.encoder.config
        cfg.apply_spec_augment = bool(spec_augment)
        self.freeze_mode, self.normalize_input = freeze, bool(normalize)
        n = cfg.num_hidden_layers
        self.layers = None if layers is None else [int(i) for i in layers]
        for i in self.layers or []:
            if not -(n + 1) <= i <= n:
                raise ValueError(f"{kind}: layer {i} out of range for {n} layers (hidden states 0..{n})")
        self.layer_combine = layer_combine
        count = len(self.layers) if self.layers and layer_combine == "concat" else 1
        self.dim = cfg.hidden_size * count
        if freeze == "all":
            self.encoder.requires_grad_(False)
            self.encoder.eval()
        elif freeze == "feature_encoder":
            self.encoder.feature_extractor.requires_grad_(False)
            self.encoder.feature_extractor._requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_mode == "all":
            self.encoder.eval()  # a frozen encoder keeps its dropout / layerdrop off
        return self

    def forward(self, audio: torch.Tensor, num_frames: int) -> torch.Tensor:
        if self.resample == "after":
            return super().forward(audio, num_frames)
        if audio.ndim != 2:
            raise ValueError(f"{self.kind}: audio must be B x S, got shape {tuple(audio.shape)}")
        return self.features(audio, int(num_frames))

    def features(self, audio: torch.Tensor, num_frames: Optional[int] = None) -> torch.Tensor:
        """The encoder's features at 50 Hz, or with `num_frames` (resample="before") at the video
        rate: the CNN features resampled to `num_frames` before the projection and transformer."""
        x = audio.float()
        if self.normalize_input:
            x = (x - x.mean(dim=1, keepdim=True)) / torch.sqrt(x.var(dim=1, keepdim=True, unbiased=False) + 1e-7)
        if x.shape[1] < 400:  # the CNN's receptive field: shorter input has no frame
            x = F.pad(x, (0, 400 - x.shape[1]))
        hidden = self.layers is not None
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.freeze_mode != "all"):
            if num_frames is None:
                out = self.encoder(x, output_hidden_states=hidden, return_dict=True)
                last = out.last_hidden_state
            else:
                enc = self.encoder
                cnn = resample_to_frames(enc.feature_extractor(x).transpose(1, 2), num_frames)
                projected = enc.feature_projection(cnn)  # wav2vec2: (hidden, normed cnn); hubert: hidden
                states = projected[0] if isinstance(projected, tuple) else projected
                if enc.config.apply_spec_augment and self.training:
                    states = enc._mask_hidden_states(states)
                out = enc.encoder(states, output_hidden_states=hidden, return_dict=True)
                last = out.last_hidden_state
                if getattr(enc, "adapter", None) is not None:
                    last = enc.adapter(last)
        if self.layers is None:
            return last
        chosen = [out.hidden_states[i] for i in self.layers]
        if self.layer_combine == "mean":
            return torch.stack(chosen, dim=0).mean(dim=0)
        return torch.cat(chosen, dim=-1)


def build_frontend(kind: str, config: Optional[dict[str, Any]] = None) -> AudioFrontend:
    """A front-end of `kind` (one of KINDS) from its option dict (see the module docstring)."""
    config = dict(config or {})
    if kind == "mfcc":
        return MFCCFrontend(**config)
    if kind in HF_KINDS:
        return HFSpeechFrontend(kind, **config)
    raise ValueError(f"unknown audio front-end {kind!r}; known: {list(KINDS)}")
