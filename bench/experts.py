"""SyncNet experts: a SyncNet trained on a protocol's own train split, for LSE-D / LSE-C offline.

The official ``syncnet_v2.model`` can only be downloaded, so a protocol whose data comes with
talkbench (synthtalk) would have no lip-sync metric offline. An *expert* is the talkbench SyncNet
network (`metrics.syncnet.net.SyncNet`, the same layer list) at a reduced channel width, trained here on
the protocol's **train split only** (test clips are never seen) and then scored through the
unchanged evaluation code (`metrics.syncnet.features.evaluate`).

Inputs are exactly the evaluation's: 25 fps video, 5-frame windows of 224 x 224 BGR crops made by
the protocol's crop recipe (`syncnet_crops` on median-filtered landmark boxes of the reference
landmarks, crop_scale 0.4), and 13 x 20 MFCC windows from ``python_speech_features.mfcc`` of the
int16 audio (`audio_to_int16`, `mfcc_features`), 4 MFCC columns per video frame.

Objective: the original SyncNet contrastive loss (Chung & Zisserman 2016) on the Euclidean distance
of the *unnormalised* embeddings -- the quantity LSE-D / LSE-C measure:

    L = mean_pos d^2 + mean_neg max(margin - d, 0)^2

(positives and negatives are averaged separately, so their balance does not depend on how many
negatives are drawn -- a deviation from the paper's single mean over all pairs). Positives pair the
video window i with the audio window i of the same clip; negatives pair it with the audio window
i + k of the same clip for a random shift 2 <= |k| <= 15 (the evaluation searches +-15; shifts of
+-1 are left out because one frame of coarticulation makes them nearly in sync, and the reference
accepts an offset of +-1 anyway) and, one in `other_clip_every`, with a window of another clip.

CPU budget: the main job trains the expert in about two minutes on 2 cores. At width 1/8 (channels
12-64, ~0.2 M parameters, ~0.11 GMAC per window against ~1.5 for the full network) and a 128-d
embedding, a few epochs over the synthtalk train windows fit that budget. Training is deterministic
for a seed on CPU (seeded torch and numpy generators, a fixed thread count, ordered data).

The checkpoint lives at ``$TALKBENCH_HOME/experts/<protocol>/syncnet-<key>.pt``, key = sha256 of
(protocol hash, train-split clip hashes, config, seed); it is written atomically and reused when
present. The metrics use it through ``weights: syncnet_expert`` (`metrics.syncnet.EXPERT_WEIGHTS`):
`resolve` returns the expert's identity (file, sha256, config, seed) as an *evaluator*, which the
scorer is given explicitly and builds those metrics with; the protocol object is left as loaded, so
its hash stays the hash of its file. `talkbench run`, `score` and `sanity` use the default config and
seed 0 whatever the run's ``--seed`` (the expert is part of the metric, not of the method being
scored); its sha256 is in every result's provenance (``evaluators``), in its metric entries
(``weights``) and in the metric cache keys. Measured on synthtalk (64 train clips, 3629 windows,
2 epochs = 226 steps): ~15 s of crops and ~75 s of training on 2 CPU cores; the same sha256 twice.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from tqdm import tqdm

from core.hashing import file_sha256, key_of
from core.constants import SAMPLE_RATE
from core.types import Clip
from bench.data.clips import clip_hash
from core.paths import talkbench_home
from bench.protocol import Protocol
from faces import crops
from metrics import syncnet as sn

log = logging.getLogger(__name__)

EXPERT_KINDS = ("syncnet",)
THREADS = 2  # fixed so that float reductions, hence the checkpoint bytes, repeat on CPU


class ExpertError(Exception):
    """An expert cannot be trained or loaded (the message says why)."""


@dataclass(frozen=True)
class SyncExpertConfig:
    width: float = 0.125  # channel multiplier of the SyncNet layer list (1 = official size)
    embedding_dim: int = 128
    epochs: int = 2
    batch_size: int = 32  # video windows per step
    negatives: int = 3  # negative audio windows per video window
    other_clip_every: int = 3  # one negative in this many comes from another clip
    min_shift: int = 2
    max_shift: int = 15
    margin: float = 10.0
    lr: float = 1e-3
    max_clips: Optional[int] = None  # train on the first N train clips (None: all)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self) -> None:
        if not 0 < self.width <= 1:
            raise ExpertError(f"width must be in (0, 1], got {self.width}")
        if self.min_shift < 1 or self.max_shift < self.min_shift:
            raise ExpertError(f"need 1 <= min_shift <= max_shift, got {self.min_shift}, {self.max_shift}")
        for name in ("embedding_dim", "epochs", "batch_size", "negatives", "other_clip_every"):
            if getattr(self, name) < 1:
                raise ExpertError(f"{name} must be >= 1, got {getattr(self, name)}")


# ----------------------------------------------------------------------------------- data
@dataclass
class _ClipData:
    video: np.ndarray  # T x 224 x 224 x 3 BGR uint8 (the evaluation's crops)
    mfcc: np.ndarray  # 13 x M float32
    n: int  # windows (the evaluation's count)


def clip_inputs(clip: Clip, crop_scale: float = crops.CROP_SCALE) -> _ClipData:
    """The evaluation's inputs for one clip with frames: syncnet crops (BGR) and MFCC."""
    if abs(clip.fps - sn.FPS) > 1e-6 or clip.sample_rate != SAMPLE_RATE:
        raise ExpertError(f"clip {clip.id}: SyncNet needs 25 fps and 16 kHz, got {clip.fps} fps, "
                          f"{clip.sample_rate} Hz")
    frames = clip.frames
    boxes = crops.smooth_boxes(crops.landmark_boxes(clip.landmarks))
    video = sn.syncnet_crops(frames[..., ::-1], boxes, crop_scale)
    clip.release_frames()
    audio16 = sn.audio_to_int16(clip.audio)
    n = sn.num_windows(len(video), len(audio16))
    return _ClipData(video, sn.mfcc_features(audio16), n)


def _video_batch(data: list[_ClipData], items: np.ndarray) -> torch.Tensor:
    """B x 3 x 5 x 224 x 224 float (0-255 BGR) for (clip, window) rows of `items`."""
    wins = np.stack([data[c].video[i:i + sn.FRAMES_PER_WINDOW] for c, i in items])  # B x 5 x H x W x 3
    return torch.from_numpy(wins).permute(0, 4, 1, 2, 3).float()


def _audio_batch(data: list[_ClipData], items: np.ndarray) -> torch.Tensor:
    """B x 1 x 13 x 20 MFCC windows for (clip, window) rows of `items`."""
    cols = [data[c].mfcc[:, sn.MFCC_PER_FRAME * j:sn.MFCC_PER_FRAME * j + sn.MFCC_PER_WINDOW]
            for c, j in items]
    return torch.from_numpy(np.stack(cols)).unsqueeze(1)


def _negatives(data: list[_ClipData], items: np.ndarray, cfg: SyncExpertConfig,
               rng: np.random.Generator) -> np.ndarray:
    """(B * negatives) x 2 audio windows that are out of sync with the video windows `items`."""
    out = []
    for r in range(cfg.negatives):
        for c, i in items:
            if (r + 1) % cfg.other_clip_every == 0 and len(data) > 1:
                other = int(rng.integers(len(data) - 1))
                other += other >= c
                out.append((other, int(rng.integers(data[other].n))))
                continue
            n = data[c].n
            shifts = [k for k in range(-cfg.max_shift, cfg.max_shift + 1)
                      if abs(k) >= cfg.min_shift and 0 <= i + k < n]
            if not shifts:  # a clip too short to shift within: fall back to another clip
                other = (c + 1) % len(data)
                out.append((other, int(rng.integers(data[other].n))))
            else:
                out.append((c, i + int(rng.choice(shifts))))
    return np.asarray(out, dtype=np.int64)


def contrastive_loss(d_pos: torch.Tensor, d_neg: torch.Tensor, margin: float) -> torch.Tensor:
    """SyncNet's contrastive loss on Euclidean distances, positives and negatives averaged apart."""
    return d_pos.pow(2).mean() + torch.clamp(margin - d_neg, min=0).pow(2).mean()


# ----------------------------------------------------------------------------------- training
def train(clips: list[Clip], cfg: SyncExpertConfig = SyncExpertConfig(), seed: int = 0,
          device: str = "cpu", progress: bool = True) -> tuple[sn.SyncNet, dict]:
    """Train an expert on `clips` (the train split). Returns the network (eval mode) and stats."""
    cfg.validate()
    clips = list(clips)[:cfg.max_clips] if cfg.max_clips else list(clips)
    if not clips:
        raise ExpertError("no training clips")
    threads = torch.get_num_threads()
    if device == "cpu":
        torch.set_num_threads(THREADS)
    try:
        return _train(clips, cfg, seed, device, progress)
    finally:
        torch.set_num_threads(threads)


def _train(clips: list[Clip], cfg: SyncExpertConfig, seed: int, device: str,
           progress: bool) -> tuple[sn.SyncNet, dict]:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    data = [clip_inputs(c) for c in tqdm(clips, desc="expert: crops", disable=not progress, leave=False)]
    data = [d for d in data if d.n >= 1]
    if not data:
        raise ExpertError("no training clip is long enough for one SyncNet window (6 frames, 0.24 s)")
    windows = np.asarray([(c, i) for c, d in enumerate(data) for i in range(d.n)], dtype=np.int64)
    prep_s = time.perf_counter() - start
    model = sn.SyncNet(embedding_dim=cfg.embedding_dim, width=cfg.width).to(device)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    steps_per_epoch = max(1, len(windows) // cfg.batch_size)  # drop the ragged last batch (BN)
    bar = tqdm(total=cfg.epochs * steps_per_epoch, desc="expert: train syncnet", disable=not progress)
    losses = []
    for epoch in range(cfg.epochs):
        order = rng.permutation(len(windows))
        for step in range(steps_per_epoch):
            items = windows[order[step * cfg.batch_size:(step + 1) * cfg.batch_size]]
            neg = _negatives(data, items, cfg, rng)
            vid = model.forward_lip(_video_batch(data, items).to(device))
            aud = model.forward_aud(_audio_batch(data, np.concatenate([items, neg])).to(device))
            b = len(items)
            d_pos = torch.nn.functional.pairwise_distance(vid, aud[:b], eps=sn.DIST_EPS)
            d_neg = torch.nn.functional.pairwise_distance(vid.repeat(cfg.negatives, 1), aud[b:],
                                                          eps=sn.DIST_EPS)
            loss = contrastive_loss(d_pos, d_neg, cfg.margin)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{np.mean(losses[-20:]):.3f}",
                            pos=f"{float(d_pos.detach().mean()):.2f}",
                            neg=f"{float(d_neg.detach().mean()):.2f}")
    bar.close()
    model.eval()
    stats = {"clips": len(data), "windows": int(len(windows)), "steps": len(losses),
             "first_loss": losses[0] if losses else None,
             "final_loss": float(np.mean(losses[-20:])) if losses else None,
             "prepare_s": prep_s, "train_s": time.perf_counter() - start - prep_s}
    return model.cpu(), stats


# ----------------------------------------------------------------------------------- checkpoints
def checkpoint_path(protocol: Protocol, train_clips: list[Clip], cfg: SyncExpertConfig,
                    seed: int) -> Path:
    key = key_of("syncnet-expert", protocol.hash, [clip_hash(c) for c in train_clips],
                 cfg.to_dict(), seed)
    return talkbench_home() / "experts" / protocol.id / f"syncnet-{key[:16]}.pt"


def check_config(path: Path, cfg: SyncExpertConfig) -> None:
    """Refuse a checkpoint whose saved config differs from `cfg` (naming the differences)."""
    saved = sn.read_expert_config(path)
    wanted = cfg.to_dict()
    diff = sorted(k for k in set(saved) | set(wanted) if k in wanted and saved.get(k) != wanted[k])
    if diff:
        details = ", ".join(f"{k}: checkpoint {saved.get(k)!r} vs requested {wanted[k]!r}" for k in diff)
        raise ExpertError(f"SyncNet expert {path} was trained with another config ({details}); "
                          f"delete it or train a new one with `talkbench experts train syncnet`")


def ensure_syncnet(protocol: Protocol, train_clips: list[Clip], cfg: SyncExpertConfig = SyncExpertConfig(),
                   seed: int = 0, device: str = "cpu", progress: bool = True,
                   force: bool = False) -> Path:
    """The protocol's SyncNet expert checkpoint: reused if present, else trained and saved."""
    if not train_clips:
        raise ExpertError(f"protocol {protocol.id} has an empty train split: no SyncNet expert")
    if not all(c.has_frames for c in train_clips):
        raise ExpertError(f"protocol {protocol.id}: the train clips have no frames to train on")
    path = checkpoint_path(protocol, train_clips, cfg, seed)
    if path.is_file() and not force:
        check_config(path, cfg)
        return path
    model, stats = train(train_clips, cfg, seed, device, progress)
    sn.save_expert(path, model, {**cfg.to_dict(), "seed": seed, "protocol": protocol.id,
                                 "protocol_hash": protocol.hash, "train_clips": stats["clips"],
                                 "train_windows": stats["windows"], "final_loss": stats["final_loss"]})
    log.info("SyncNet expert for %s: %s (%d clips, %d steps, %.0f s)", protocol.id, path,
             stats["clips"], stats["steps"], stats["prepare_s"] + stats["train_s"])
    return path


def needs_syncnet_expert(protocol: Protocol) -> bool:
    return any(spec.params.get("weights") == sn.EXPERT_WEIGHTS and not spec.params.get("weights_path")
               for spec in protocol.metrics)


def resolve(protocol: Protocol, splits: dict[str, list[Clip]], device: str = "cpu",
            progress: bool = True, cfg: Optional[SyncExpertConfig] = None) -> dict[str, dict]:
    """The evaluators the protocol's metrics need: weights name -> the file made for them.

    ``{"syncnet_expert": {"kind", "path", "file", "sha256", "config", "seed"}}`` when a metric
    names ``weights: syncnet_expert`` without a ``weights_path`` (the expert is trained first when
    it is missing); empty when none does. The scorer builds those metrics with that file
    (`bench.scoring.Scorer`) and the results record it; the protocol is not changed. If training is
    impossible (no train clips with frames) there is no evaluator and the metrics are reported
    unavailable with the reason.
    """
    if not needs_syncnet_expert(protocol):
        return {}
    cfg = cfg or SyncExpertConfig()
    try:
        path = ensure_syncnet(protocol, splits.get("train", []), cfg, device=device, progress=progress)
    except ExpertError as exc:
        log.warning("SyncNet expert unavailable: %s", exc)
        return {}
    return {sn.EXPERT_WEIGHTS: {"kind": "syncnet", "path": str(path), "file": path.name,
                                "sha256": file_sha256(path), "config": cfg.to_dict(), "seed": 0}}


# ----------------------------------------------------------------------------------- CLI
def _cmd_experts(args: argparse.Namespace) -> int:
    from bench.data.clips import load_splits
    from bench.protocol import load_protocol

    if args.kind not in EXPERT_KINDS:
        raise ValueError(f"unknown expert {args.kind!r}; known: {list(EXPERT_KINDS)}")
    protocol = load_protocol(args.protocol)
    splits = load_splits(protocol, not args.quiet, root=args.root)
    try:
        path = ensure_syncnet(protocol, splits["train"], seed=args.seed, device=args.device,
                              progress=not args.quiet, force=args.force)
    except ExpertError as exc:
        raise ValueError(str(exc)) from None
    print(f"SyncNet expert for {protocol.id}: {path}\nsha256 {file_sha256(path)}")
    return 0


def add_cli(subparsers: "argparse._SubParsersAction") -> argparse.ArgumentParser:
    p = subparsers.add_parser("experts", help="train metric experts on a protocol's train split")
    p.add_argument("action", choices=["train"])
    p.add_argument("kind", help="which expert: syncnet (for LSE-D / LSE-C)")
    p.add_argument("--protocol", required=True)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="retrain even if a checkpoint exists")
    p.add_argument("--root", help="dataset root of a real dataset (default: $TALKBENCH_DATA_<DATASET>)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_experts)
    return p
