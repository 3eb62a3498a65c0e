"""TCSAN + Audio2AU (paper: papers/tcsan_audio2au.txt, section 3): audio + the first frame -> a
talking-face video, 112 x 112.

Methods registered here (the paper's Tables 3, 4 and 6; `tcsan_full` lists the others as its
ablations, so `talkbench run --ablations` adds them):

| name | paper row | fusion | Audio2AU | losses |
|---|---|---|---|---|
| `tcsan_full` | T4 TCSAN+Audio2AU, T6 Full model | tcsan | yes | rec, per, id, au |
| `tcsan` | T3 TCSAN (ours), T4 TCSAN, T6 Lrec,per,id + TCSAN | tcsan | no | rec, per, id |
| `tcsan_gru` | T3 GRU | gru | no | rec, per, id |
| `tcsan_tcn` | T3 TCN | tcn | no | rec, per, id |
| `tcsan_mhatt_tcn` | T3 Mh-att+TCN | mhatt_tcn | no | rec, per, id |
| `tcsan_coatt_tcn` | T3 Co-att+TCN | coatt_tcn | no | rec, per, id |
| `tcsan_audio2au_only` | T4 Audio2AU | gru | yes | rec, per, id, au |
| `tcsan_lrec` | T6 Baseline (Lrec), T5 Baseline (Lrec) | gru | no | rec |
| `tcsan_lrec_per` | T6 Lrec,per | gru | no | rec, per |
| `tcsan_lrec_per_id` | T6 Lrec,per,id | gru | no | rec, per, id |
| `tcsan_lau` | T6 Lrec,per,id,au + TCSAN | tcsan | no | rec, per, id, au |

Why the rows are read so: Table 6's "Lrec,per,id" has exactly Table 3's GRU values and its
"+ TCSAN" row exactly Table 3's TCSAN values, so the Table 3 rows (and the loss baselines) use
rec + per + id without the AU loss, and the loss baselines' fusion is the GRU (the conference
version's recurrent fusion). `tcsan_lrec_per_id` is therefore the same configuration as
`tcsan_gru` (kept as its own row so each table names its own). Table 4's "Audio2AU" row (Audio2AU
without TCSAN) is read as the GRU fusion with the Audio2AU features and all four losses.

Architecture (`model.py`):
- Identity encoder: 4 stride-2 convs (ReLU) + FC -> 512 on the 112 x 112 first frame; its four
  feature maps are the decoder's U-Net skips.
- Audio encoder: 5 convs (BN + ReLU) + 2 FC -> 512 on a 12 x 28 MFCC window per video frame: 12
  coefficients without the energy term (`baselines.audio_frontends.MFCCFrontend`, 13 cepstra with
  c0 dropped, 25 ms window, 10 ms hop, per-clip mean and variance normalised), 28 steps = 280 ms
  centred on the frame's midpoint (edges repeat the first / last step).
- Audio2AU: 3x3 conv over frequency and time, a conv over the whole frequency axis, 2 LSTM layers,
  3 FCs (the last one per AU, 64 -> 1); pre-trained (weighted BCE, Eq. 5) on the train split's
  MFCC windows and AU labels, then its last FC is dropped and the 5 x 64 = 320-d features join the
  fusion (1344-d input); fine-tuned with lr `lr_audio2au` (1e-6) during full training.
- TCSAN: a linear projection to `fusion_dim`, then `tcsan_depth` residual blocks, block n a
  non-causal dilated conv (k = 3, dilation 2^(n-1), Eq. 1) + ReLU followed by multi-head
  self-attention (Q = K = V, 4 heads, Eq. 2-4) among the elements of the frame's feature (the
  paper: "weights to different elements of the cross-modal features in the frame"; the feature is
  cut into `att_tokens` tokens), residual + LayerNorm. Depth is not in the paper: 4 blocks
  (receptive field 1 + 2 (2^4 - 1) = 31 frames, 1.24 s at 25 fps) in both presets.
- Image decoder: FC + 6 transposed convs (4 stride-2 with U-Net skips, 2 stride-1), sigmoid.
- AU classifier: 4 convs, a max-pool after every two, 3 FC, sigmoid, on the lower half of the face;
  pre-trained on the train split's real frames with class-weighted BCE (Eq. 5, w_i from the AU
  occurrence rates), fine-tuned with lr `lr_au_classifier` (1e-7). Its own F1 / accuracy on the
  real train frames after pre-training is kept in `pretrain_log` (paper Table 1).
- Losses: 1.5 L_rec (L1, Eq. 9) + 1.5 L_id (L1 between the upper halves of the generated frame
  and of the identity frame) + 0.07 L_per (VGG19 perceptual, `baselines.image_training`, Eq. 8)
  + 0.02 L_au (weighted BCE + weighted Dice, Eq. 5-7, of the AU classifier on the generated frame
  against the frame's AU labels). Adam beta1 0.5, lr 2e-4 (per-parameter-group betas and lrs), 20
  epochs at `paper`. The shared trainer's cosine schedule runs with eta_min 0 so that each group
  decays from its own lr (the paper gives no schedule: a departure).

AU labels: the clips' `aus` (T x 5, AU10/14/20/25/26). On synthtalk these are its exact speech-AU
ground truth; on prepared GRID / TCD-TIMIT the harness fills them from the protocol's AU backend
before training (`bench.runner`); a clip without them is an error.

Frame size: the model works at 112 x 112 (the paper's face crops, and the GRID / TCD-TIMIT
protocols' resolution). The identity frame is resized to 112 on the way in; the output is resized
(bilinear) to `MethodInput.frame_size` when that differs (on synthtalk: 256), and the method logs
that it did.

Presets. `paper`: widths 64 (identity, audio, decoder), AU classifier 32, Audio2AU 64 channels
with LSTM 256, TCSAN width 512 (8 tokens of 64, 4 heads), 20 epochs over all 32-frame windows
(`epoch_mode: all_windows`), batch 8, Audio2AU / AU classifier pre-training 20 epochs each; the
paper does not give widths, window, batch or pre-training length: those are talkbench's choices.
`tiny` (CPU; sized for about 2 minutes on 2 free cores on synthtalk, NOT verified: the one measured
fit took 554 s on 2 cores shared with other jobs, load average ~11; and at this size it does not
yet beat `static` on AU-F1 or LSE-C (expert) on synthtalk): widths 8 (decoder 4), TCSAN width 64 (4 tokens),
8-frame windows, batch 8, 12 epochs of one window per clip, lr 2e-3 (the paper's 2e-4 does not
converge in ~100 steps), 1 thread, short pre-training on 1536 random train frames (Audio2AU 8
epochs, AU classifier 3), and the perceptual
loss on a randomly initialised VGG19 cut at relu1_1 on frames downsized to 56 px (`vgg_weights:
null`, `per_size: 56`): ImageNet weights are not shipped with talkbench, and VGG19 at 112 px
costs several seconds a step on the CPU (measured: relu1_1 + relu2_1 at 112 px, 96 frames: 13 s).
Also in `tiny` only, `identity_residual`: the decoder's last layer gives a change of the identity
frame (identity + tanh(x / 2), clamped) instead of the frame itself (sigmoid), so that ~100 CPU
steps start from the identity's face and spend themselves on the mouth; `paper` decodes the frame
itself, as the paper does. The AU loss
weight stays 0.02 in both presets.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import cv2
import numpy as np
import torch

from baselines import data_parallel, register
from baselines.audio_frontends import MFCCFrontend
from baselines.image_training import VGG19Perceptual
from baselines.torch_method import TorchMethod, TorchMethodConfig, crop_starts
from baselines.tcsan.model import (IMAGE, MFCC_SHAPE, NUM_AUS, TCSANNet, au_loss, class_weights,
                                   upper_half, weighted_bce, Audio2AU, AUClassifier)
from core import distributed
from core.types import Clip, MethodInput, Prediction

log = logging.getLogger(__name__)

SPEECH_AUS = ("AU10", "AU14", "AU20", "AU25", "AU26")
MFCC_HOP_S = 0.010

TINY: dict[str, Any] = dict(
    epochs=12, lr=2e-3, batch_size=8, window_frames=8, threads=1, per_size=56, pretrain_frames=1536,
    identity_residual=True,
    id_width=8, audio_width=8, a2au_width=8, a2au_hidden=32, fusion_dim=64, att_tokens=4,
    dec_width=4, au_width=8, vgg_weights=None, vgg_layers=("relu1_1",),
    vgg_layer_weights=(1.0,), a2au_epochs=8, clf_epochs=3, pretrain_lr=2e-3)
PAPER: dict[str, Any] = dict(
    epochs=20, lr=2e-4, batch_size=8, window_frames=32, epoch_mode="all_windows",
    id_width=64, audio_width=64, a2au_width=64, a2au_hidden=256, fusion_dim=512, att_tokens=8,
    dec_width=64, au_width=32, vgg_weights="vgg19", a2au_epochs=20, clf_epochs=20, pretrain_lr=1e-3)


@dataclass
class TCSANConfig(TorchMethodConfig):
    lr: float = 2e-4
    lr_min: float = 0.0  # each group decays from its own lr (module docstring)
    beta1: float = 0.5
    lr_audio2au: float = 1e-6  # fine-tuning lr of Audio2AU during full training
    lr_au_classifier: float = 1e-7  # fine-tuning lr of the AU classifier
    feature_dim: int = 512  # f_id and f_a
    id_width: int = 64
    audio_width: int = 64
    a2au_width: int = 64
    a2au_hidden: int = 256
    fusion: str = "tcsan"  # tcsan | tcn | mhatt_tcn | coatt_tcn | gru
    fusion_dim: int = 512
    tcsan_depth: int = 4  # not in the paper: receptive field 31 frames
    att_tokens: int = 8
    att_heads: int = 4
    dec_width: int = 64
    au_width: int = 32
    use_audio2au: bool = True
    use_per: bool = True
    use_id: bool = True
    use_au_loss: bool = True
    lambda_rec: float = 1.5
    lambda_id: float = 1.5
    lambda_per: float = 0.07
    lambda_au: float = 0.02
    vgg_weights: Optional[str] = "vgg19"  # registry name; None: random VGG19 (tiny only)
    vgg_layers: tuple = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
    vgg_layer_weights: tuple = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)
    identity_residual: bool = False  # tiny: the decoder outputs a change of the identity frame
    per_size: int = IMAGE  # frames are resized (bilinear) to this before VGG19 (tiny: 56)
    a2au_epochs: int = 20  # Audio2AU pre-training epochs over the train frames
    clf_epochs: int = 20  # AU classifier pre-training epochs over the train frames
    pretrain_lr: float = 1e-3
    pretrain_batch: int = 128
    pretrain_frames: int = 0  # > 0: pre-train on this many train frames drawn at random (tiny); 0: all

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"tiny": TINY, "paper": PAPER}


# ----------------------------------------------------------------------------- data

def mfcc_windows(audio: np.ndarray, sample_rate: int, fps: float, num_frames: int) -> np.ndarray:
    """T x 12 x 28: 12 MFCCs (c0 dropped) over 28 10-ms steps centred on each video frame's midpoint."""
    if sample_rate != 16000:
        raise ValueError(f"tcsan: needs 16 kHz audio, got {sample_rate} Hz")
    front = MFCCFrontend(n_mfcc=MFCC_SHAPE[0] + 1, deltas=0, normalize="meanvar", sample_rate=sample_rate)
    with torch.no_grad():
        ceps = front.features(torch.from_numpy(np.asarray(audio, np.float32))[None])[0, :, 1:].numpy()
    steps = MFCC_SHAPE[1]
    centres = np.round((np.arange(num_frames) + 0.5) / fps / MFCC_HOP_S).astype(int)
    idx = np.clip(centres[:, None] + np.arange(-steps // 2, steps - steps // 2)[None], 0, len(ceps) - 1)
    return np.ascontiguousarray(ceps[idx].transpose(0, 2, 1), dtype=np.float32)  # T x 12 x 28


def resize_frames(frames: np.ndarray, size: int = IMAGE) -> np.ndarray:
    if frames.shape[1:3] == (size, size):
        return np.ascontiguousarray(frames)
    interp = cv2.INTER_AREA if frames.shape[1] > size else cv2.INTER_LINEAR
    return np.stack([cv2.resize(f, (size, size), interpolation=interp) for f in frames])


def au_labels(clip: Clip) -> np.ndarray:
    """T x 5 float32 occurrence of AU10/14/20/25/26 from `clip.aus` (reordered by `au_names`)."""
    if clip.aus is None:
        raise ValueError(f"tcsan: clip {clip.id} has no AU labels (`aus`); on real data the harness "
                         f"fills them from the protocol's AU backend before training")
    names = tuple(clip.au_names) or SPEECH_AUS
    missing = [a for a in SPEECH_AUS if a not in names]
    if missing:
        raise ValueError(f"tcsan: clip {clip.id} has no labels for {missing} (it has {list(names)})")
    return np.asarray(clip.aus, np.float32)[:, [names.index(a) for a in SPEECH_AUS]]


@dataclass
class ClipData:
    frames: np.ndarray  # T x 112 x 112 x 3 uint8
    mfcc: np.ndarray  # T x 12 x 28
    aus: np.ndarray  # T x 5


def to_image(frames: np.ndarray, device) -> torch.Tensor:
    """... x H x W x 3 uint8 -> ... x 3 x H x W float in [0, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(frames)).to(device).float() / 255.0
    return t.movedim(-1, -3)


def f1_accuracy(pred: np.ndarray, labels: np.ndarray) -> dict[str, dict[str, float]]:
    """Per-AU F1 (nan when 0/0) and accuracy of boolean N x 5 predictions."""
    out = {}
    for i, name in enumerate(SPEECH_AUS):
        p, y = pred[:, i].astype(bool), labels[:, i].astype(bool)
        tp, fp, fn = int((p & y).sum()), int((p & ~y).sum()), int((~p & y).sum())
        f1 = 2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else float("nan")
        out[name] = {"f1": f1, "accuracy": float((p == y).mean()) if len(p) else float("nan"),
                     "rate": float(y.mean()) if len(y) else float("nan")}
    return out


# ----------------------------------------------------------------------------- method

@register
class TCSAN(TorchMethod):
    name = "tcsan_full"
    description = "TCSAN + Audio2AU: AU-guided 112x112 talking face from audio and the first frame"
    inputs = frozenset({"audio", "identity_frame"})
    outputs = frozenset({"frames"})
    Config = TCSANConfig
    needs_au_labels = True
    ablations = ("tcsan", "tcsan_gru", "tcsan_tcn", "tcsan_mhatt_tcn", "tcsan_coatt_tcn",
                 "tcsan_audio2au_only", "tcsan_lrec", "tcsan_lrec_per", "tcsan_lrec_per_id", "tcsan_lau")

    def __init__(self, config: Optional[TCSANConfig] = None) -> None:
        super().__init__(config)
        self._data: dict[int, ClipData] = {}
        self._pretrained: dict[str, dict[str, torch.Tensor]] = {}
        self._au_weights: Optional[torch.Tensor] = None
        self._vgg: Optional[VGG19Perceptual] = None
        self.pretrain_log: dict[str, Any] = {}

    # -- data ----------------------------------------------------------------------------
    def clip_data(self, clip: Clip) -> ClipData:
        key = id(clip)
        if key not in self._data:
            if not clip.has_frames:
                raise ValueError(f"{self.name}: clip {clip.id} has no frames to train on")
            self._data[key] = ClipData(resize_frames(clip.frames),
                                       mfcc_windows(clip.audio, clip.sample_rate, clip.fps, clip.num_frames),
                                       au_labels(clip))
            if clip.frames_loader is not None:
                clip.release_frames()  # the 112 px copy is all training needs; the loader can reread
        return self._data[key]

    def make_batch(self, clips, rng, device, starts=None) -> dict[str, torch.Tensor]:
        length, starts = crop_starts(clips, rng, self.window_length(clips[0].fps), starts)
        data = [self.clip_data(c) for c in clips]
        sl = [slice(s, s + length) for s in starts]
        return {"identity": to_image(np.stack([d.frames[0] for d in data]), device),
                "target": to_image(np.stack([d.frames[s] for d, s in zip(data, sl)]), device),
                "mfcc": torch.from_numpy(np.stack([d.mfcc[s] for d, s in zip(data, sl)])).to(device),
                "aus": torch.from_numpy(np.stack([d.aus[s] for d, s in zip(data, sl)])).to(device)}

    # -- model ---------------------------------------------------------------------------
    def build_model(self) -> torch.nn.Module:
        cfg = self.config
        net = TCSANNet(cfg)
        if net.audio2au is not None and "audio2au" in self._pretrained:
            net.audio2au.load_state_dict(self._pretrained["audio2au"])
        if net.au_classifier is not None and "au_classifier" in self._pretrained:
            net.au_classifier.load_state_dict(self._pretrained["au_classifier"])
        return net

    def trainable_parameters(self, model):
        cfg = self.config
        betas = (cfg.beta1, 0.999)
        groups = [{"params": [p for n, p in model.named_parameters()
                              if not n.startswith(("audio2au.", "au_classifier."))], "lr": cfg.lr, "betas": betas}]
        if model.audio2au is not None:
            groups.append({"params": list(model.audio2au.parameters()), "lr": cfg.lr_audio2au, "betas": betas})
        if model.au_classifier is not None:
            groups.append({"params": list(model.au_classifier.parameters()), "lr": cfg.lr_au_classifier,
                           "betas": betas})
        return groups

    def perceptual(self, device) -> VGG19Perceptual:
        if self._vgg is None:
            cfg = self.config
            self._vgg = VGG19Perceptual(cfg.vgg_weights, tuple(cfg.vgg_layers), tuple(cfg.vgg_layer_weights))
        return self._vgg.to(device)

    def compute_loss(self, model, batch) -> torch.Tensor:
        cfg = self.config
        pred = model(batch["identity"], batch["mfcc"])  # B x T x 3 x 112 x 112
        b, t = pred.shape[:2]
        flat, target = pred.reshape(b * t, 3, IMAGE, IMAGE), batch["target"].reshape(b * t, 3, IMAGE, IMAGE)
        loss = cfg.lambda_rec * (flat - target).abs().mean()
        if cfg.use_id:
            ident = upper_half(batch["identity"])[:, None].expand(b, t, 3, IMAGE // 2, IMAGE)
            loss = loss + cfg.lambda_id * (upper_half(pred) - ident).abs().mean()
        if cfg.use_per:
            a, b_ = flat, target
            if cfg.per_size != IMAGE:
                a = torch.nn.functional.interpolate(flat, size=cfg.per_size, mode="bilinear", align_corners=False)
                b_ = torch.nn.functional.interpolate(target, size=cfg.per_size, mode="bilinear", align_corners=False)
            loss = loss + cfg.lambda_per * self.perceptual(flat.device)(a, b_)
        if cfg.use_au_loss:
            weights = self.au_weights(flat.device)
            loss = loss + cfg.lambda_au * au_loss(model.au_classifier(flat), batch["aus"].reshape(b * t, NUM_AUS),
                                                   weights)
        return loss

    def au_weights(self, device) -> torch.Tensor:
        if self._au_weights is None:  # after a load: uniform (only the loss uses them)
            self._au_weights = torch.ones(NUM_AUS)
        return self._au_weights.to(device)

    # -- pre-training --------------------------------------------------------------------
    def fit(self, train, val, *, device="cpu", seed=0, workdir=None) -> None:
        if not train:
            raise ValueError(f"{self.name}: fit needs at least one training clip")
        cfg = self.config
        data = [self.clip_data(c) for c in train]
        labels = np.concatenate([d.aus for d in data])
        self._au_weights = class_weights(torch.from_numpy(labels.mean(0)))
        self._pretrained = {}
        self.pretrain_log = {}
        if cfg.use_audio2au or cfg.use_au_loss:
            before = torch.are_deterministic_algorithms_enabled()
            if torch.device(device).type == "cpu":
                torch.use_deterministic_algorithms(True)
            threads = torch.get_num_threads()
            if cfg.threads:
                torch.set_num_threads(int(cfg.threads))
            try:
                if cfg.use_audio2au:
                    torch.manual_seed(seed + 101)
                    net = Audio2AU(cfg.a2au_width, cfg.a2au_hidden).to(device)
                    inputs = np.concatenate([d.mfcc for d in data])
                    self.pretrain_log["audio2au"] = self._pretrain(net, inputs, labels, cfg.a2au_epochs,
                                                                   seed + 102, device, images=False)
                    self._pretrained["audio2au"] = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
                if cfg.use_au_loss:
                    torch.manual_seed(seed + 201)
                    net = AUClassifier(cfg.au_width).to(device)
                    inputs = np.concatenate([d.frames for d in data])
                    self.pretrain_log["au_classifier"] = self._pretrain(net, inputs, labels, cfg.clf_epochs,
                                                                        seed + 202, device, images=True)
                    self._pretrained["au_classifier"] = {k: v.detach().cpu().clone()
                                                         for k, v in net.state_dict().items()}
                    self.pretrain_log["au_classifier"]["train"] = self.evaluate_au_classifier(net, train, device)
                    if val:
                        self.pretrain_log["au_classifier"]["val"] = self.evaluate_au_classifier(net, val, device)
            finally:
                torch.set_num_threads(threads)
                torch.use_deterministic_algorithms(before)
        super().fit(train, val, device=device, seed=seed, workdir=workdir)
        if workdir is not None and self.pretrain_log and distributed.world().is_main:
            import json
            from pathlib import Path

            Path(workdir).mkdir(parents=True, exist_ok=True)
            (Path(workdir) / "pretrain_log.json").write_text(json.dumps(self.pretrain_log, indent=1) + "\n")

    def _pretrain(self, net, inputs: np.ndarray, labels: np.ndarray, epochs: int, seed: int, device,
                  images: bool) -> dict[str, Any]:
        """Adam on (inputs, labels) with Eq. 5's class-weighted BCE; returns the loss per epoch."""
        cfg = self.config
        rng = np.random.default_rng(seed)
        if 0 < cfg.pretrain_frames < len(inputs):
            keep = np.sort(rng.choice(len(inputs), int(cfg.pretrain_frames), replace=False))
            inputs, labels = inputs[keep], labels[keep]
        weights = self._au_weights.to(device)
        opt = torch.optim.Adam(net.parameters(), lr=cfg.pretrain_lr)
        bs = int(cfg.pretrain_batch)
        losses = []
        world = distributed.world()
        replica = data_parallel.wrap(net, lambda model, b: weighted_bce(model(b["x"]), b["y"], weights), world)
        net.train()
        for _ in range(int(epochs)):
            order = rng.permutation(len(inputs))
            total = 0.0
            for k in range(0, len(order), bs):
                idx = np.sort(order[k:k + bs])
                part, weight = data_parallel.local_part(len(idx), world)  # this rank's share
                mine = idx[part]
                x = to_image(inputs[mine], device) if images else torch.from_numpy(inputs[mine]).to(device)
                y = torch.from_numpy(labels[mine]).to(device)
                loss, value = data_parallel.reduce_loss(replica({"x": x, "y": y}), weight, world)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(value) * len(idx)
            losses.append(total / len(inputs))
        net.eval()
        return {"epochs": int(epochs), "loss": losses, "world_size": world.size}

    def evaluate_au_classifier(self, net, clips: list[Clip], device) -> dict[str, Any]:
        """The AU classifier's per-AU F1 / accuracy (threshold 0.5) on the clips' real frames
        against their AU labels (paper Table 1)."""
        preds, labels = [], []
        net.eval()
        with torch.no_grad():
            for clip in clips:
                d = self.clip_data(clip)
                for k in range(0, len(d.frames), 128):
                    preds.append(torch.sigmoid(net(to_image(d.frames[k:k + 128], device))).cpu().numpy() >= 0.5)
                labels.append(d.aus)
        per = f1_accuracy(np.concatenate(preds), np.concatenate(labels) >= 0.5)
        f1s = [v["f1"] for v in per.values() if not np.isnan(v["f1"])]
        return {"per_au": per, "avg_f1": float(np.mean(f1s)) if f1s else float("nan"),
                "avg_accuracy": float(np.mean([v["accuracy"] for v in per.values()])),
                "frames": int(sum(len(x) for x in labels))}

    def fit_report(self, splits: dict[str, list[Clip]]) -> Optional[dict]:
        """Paper Table 1: the AU classifier's own per-AU F1 / accuracy (threshold 0.5) on the real
        frames of the train and test splits against their AU labels (synthtalk: its exact AUs;
        clips without labels are left out). None when the row has no AU classifier."""
        if self.model is None or getattr(self.model, "au_classifier", None) is None:
            return None
        out: dict[str, Any] = {"what": "AU classifier on real frames (paper Table 1)", "threshold": 0.5}
        device = torch.device(self.device)
        for name in ("train", "test"):
            clips = [c for c in splits.get(name, []) if c.aus is not None and c.has_frames]
            if clips:
                out[name] = self.evaluate_au_classifier(self.model.au_classifier, clips, device)
                for clip in clips:
                    self._data.pop(id(clip), None)  # the test frames are not needed again here
        return out

    # -- inference -----------------------------------------------------------------------
    def infer(self, model, inp: MethodInput, device) -> Prediction:
        if inp.audio is None or inp.identity_frame is None:
            raise ValueError(f"{self.name}: needs audio and the identity frame")
        mfcc = torch.from_numpy(mfcc_windows(inp.audio, inp.sample_rate, inp.fps, inp.num_frames)).to(device)
        ident = to_image(resize_frames(np.asarray(inp.identity_frame)[None]), device)
        frames = model(ident, mfcc[None], chunk=64)[0]  # the fusion sees the whole clip  # T x 3 x 112 x 112
        frames = (frames.clamp(0, 1) * 255).round().to(torch.uint8).movedim(1, -1).cpu().numpy()
        size = tuple(inp.frame_size) if inp.frame_size is not None else tuple(inp.identity_frame.shape[:2])
        if size != (IMAGE, IMAGE):
            log.info("%s: resizing its %dx%d output to the protocol's frame size %dx%d", self.name,
                     IMAGE, IMAGE, size[1], size[0])
            frames = np.stack([cv2.resize(f, (size[1], size[0]), interpolation=cv2.INTER_LINEAR) for f in frames])
        return Prediction(inp.clip_id, frames=frames)


def _variant(name: str, description: str, **flags: Any) -> type[TCSAN]:
    """A table row: TCSAN with some flags flipped by default (in every preset)."""
    cls_name = "".join(p.title() for p in name.split("_"))
    config_cls = dataclass(type(f"{cls_name}Config", (TCSANConfig,), {
        "__annotations__": {k: type(v) for k, v in flags.items()}, **flags}))
    config_cls.__module__ = __name__
    method_cls = type(cls_name, (TCSAN,), {"name": name, "description": description, "Config": config_cls,
                                           "ablations": (), "__module__": __name__})
    return register(method_cls)


NO_AU = dict(use_audio2au=False, use_au_loss=False)
TCSANOnly = _variant("tcsan", "TCSAN without Audio2AU, losses rec+per+id (Tables 3, 4, 6)", **NO_AU)
TCSANGRU = _variant("tcsan_gru", "Table 3 GRU fusion (rec+per+id)", fusion="gru", **NO_AU)
TCSANTCN = _variant("tcsan_tcn", "Table 3 TCN fusion (rec+per+id)", fusion="tcn", **NO_AU)
TCSANMhAtt = _variant("tcsan_mhatt_tcn", "Table 3 Mh-att+TCN fusion (rec+per+id)", fusion="mhatt_tcn", **NO_AU)
TCSANCoAtt = _variant("tcsan_coatt_tcn", "Table 3 Co-att+TCN fusion (rec+per+id)", fusion="coatt_tcn", **NO_AU)
TCSANAudio2AUOnly = _variant("tcsan_audio2au_only", "Table 4 Audio2AU without TCSAN (GRU fusion, all losses)",
                             fusion="gru")
TCSANLrec = _variant("tcsan_lrec", "Table 6 / 5 Baseline (Lrec): GRU fusion, L1 reconstruction only",
                     fusion="gru", use_per=False, use_id=False, **NO_AU)
TCSANLrecPer = _variant("tcsan_lrec_per", "Table 6 Lrec,per: GRU fusion", fusion="gru", use_id=False, **NO_AU)
TCSANLrecPerId = _variant("tcsan_lrec_per_id", "Table 6 Lrec,per,id: GRU fusion (= tcsan_gru)", fusion="gru",
                          **NO_AU)
TCSANLau = _variant("tcsan_lau", "Table 6 Lrec,per,id,au + TCSAN: no Audio2AU", use_audio2au=False)

VARIANTS: dict[str, type[TCSAN]] = {cls.name: cls for cls in (
    TCSAN, TCSANOnly, TCSANGRU, TCSANTCN, TCSANMhAtt, TCSANCoAtt, TCSANAudio2AUOnly, TCSANLrec, TCSANLrecPer,
    TCSANLrecPerId, TCSANLau)}

__all__ = ["TCSAN", "TCSANConfig", "VARIANTS", "SPEECH_AUS", "mfcc_windows", "au_labels", "f1_accuracy"]
