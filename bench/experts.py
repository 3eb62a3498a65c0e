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

Pinned experts. A protocol that pins its expert (``evaluators: {syncnet_expert: {sha256, file,
recipe}}``, `bench.protocol`) is scored with that file only (`resolve_pinned`): the committed file
(relative to the protocol's folder or `protocols/`), else $TALKBENCH_WEIGHTS_SYNCNET_EXPERT, else a
copy rebuilt from the recipe on the train split into $TALKBENCH_HOME/experts/<protocol>/ and checked
against the pinned sha256. Training repeats byte for byte on one machine but not across CPUs or
library versions, so a rebuild with another sha256 is refused (`PinError`) unless
``--allow-unpinned``, which scores with it and marks those columns ``"pinned": false`` (the report
daggers them). `talkbench experts train syncnet --protocol P --out FILE` writes a pinnable file
(`save_pinnable`: no losses or timings inside, so the bytes depend only on the weights and the
recipe) and prints the YAML that pins it; without ``--out`` on a pinned protocol it rebuilds and
says whether the rebuild matches the pin. `quality` measures the expert on the ground-truth test
clips; `talkbench experts quality`, `run` and `score` write it to the results folder
(``_expert_syncnet.json``, kind ``expert_quality``, which `bench.results.read_results` does not take
for a method row) and the report prints it under "Evaluators".

synthtalk's pinned expert (protocols/evaluators/synthtalk-syncnet-36ef11a0.pt, 924 083 bytes): the
default recipe but 3 epochs (width 1/8, 128-d, seed 0), 64 train clips, 3629 windows, 339 steps
(~20 s of crops and ~110 s of training on 2 idle cores, ~37 s an epoch; 880 s on 2 cores shared
with three other jobs). On the 24 ground-truth test clips: 24/24 (100%) with |AV offset| <= 1 frame
(target 90%); mean LSE-C 2.312 for ground truth, 0.660 for static (margin +1.652), 2.137 for ground
truth with the audio delayed 5 frames (margin +0.175: LSE-C is the confidence at the best offset,
which the expert finds displaced, see `quality`); LSE-D of ground truth 5.324. With the default 2
epochs (sha256 267b5561...): 23/24 (96%) within +-1 frame, LSE-C 1.481 / static 0.601 (margin
+0.880) / shifted 1.600 (margin -0.119) -- it met the target by one clip, so a third epoch
(~37 s) was bought for margin. Re-saving a loaded expert with `save_pinnable` gives the same bytes
as saving it straight after training (checked), so a rebuild is compared like for like.

Unpinned protocols (no ``evaluators:``) keep the cached expert: ``$TALKBENCH_HOME/experts/<protocol>/
syncnet-<key>.pt``, key = sha256 of (protocol hash, train-split clip hashes, config, seed), written
atomically and reused when present. The metrics use the expert through ``weights: syncnet_expert``
(`metrics.syncnet.EXPERT_WEIGHTS`): `resolve` returns its identity (file, sha256, config, seed) as
an *evaluator*, which the scorer is given explicitly and builds those metrics with; the protocol
object is left as loaded, so its hash stays the hash of its file. `talkbench run`, `score` and
`sanity` use the default config and seed 0 whatever the run's ``--seed`` (the expert is part of the
metric, not of the method being scored); its sha256 is in every result's provenance
(``evaluators``), in its metric entries (``weights``) and in the metric cache keys.
"""

from __future__ import annotations

import argparse
import logging
import os
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
from bench.protocol import Protocol, evaluator_file
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
            progress: bool = True, cfg: Optional[SyncExpertConfig] = None,
            allow_unpinned: bool = False) -> dict[str, dict]:
    """The evaluators the protocol's metrics need: weights name -> the file made for them.

    ``{"syncnet_expert": {"kind", "path", "file", "sha256", "config", "seed"}}`` when a metric
    names ``weights: syncnet_expert`` without a ``weights_path``; empty when none does. The scorer
    builds those metrics with that file (`bench.scoring.Scorer`) and the results record it; the
    protocol is not changed.

    A protocol that pins the expert (``evaluators: {syncnet_expert: {sha256, file, recipe}}``)
    is scored with the pinned file only (`resolve_pinned`): a file whose sha256 differs is refused
    (`PinError`) unless `allow_unpinned`, and the entry says ``"pinned": True`` or ``False``.
    Otherwise the expert is trained when missing and cached; if training is impossible (no train
    clips with frames) there is no evaluator and the metrics are reported unavailable.
    """
    if not needs_syncnet_expert(protocol):
        return {}
    if sn.EXPERT_WEIGHTS in protocol.evaluators:
        return {sn.EXPERT_WEIGHTS: resolve_pinned(protocol, splits.get("train", []), device, progress,
                                                  allow_unpinned)}
    cfg = cfg or SyncExpertConfig()
    try:
        path = ensure_syncnet(protocol, splits.get("train", []), cfg, device=device, progress=progress)
    except ExpertError as exc:
        log.warning("SyncNet expert unavailable: %s", exc)
        return {}
    return {sn.EXPERT_WEIGHTS: {"kind": "syncnet", "path": str(path), "file": path.name,
                                "sha256": file_sha256(path), "config": cfg.to_dict(), "seed": 0}}


# ----------------------------------------------------------------------------------- pinned experts
class PinError(ExpertError, ValueError):
    """A pinned evaluator's file is missing or has another sha256 (the message says what to do)."""


def recipe_config(recipe: dict[str, Any]) -> tuple[SyncExpertConfig, int]:
    """(config, seed) of a pinned recipe: SyncExpertConfig fields (the others at their defaults)
    and ``seed``. An unknown field is an ExpertError naming the known ones."""
    fields = set(SyncExpertConfig.__dataclass_fields__)
    unknown = sorted(set(recipe) - fields - {"seed"})
    if unknown:
        raise ExpertError(f"recipe fields {unknown} are unknown; known: {sorted(fields)} and seed")
    cfg = SyncExpertConfig(**{k: v for k, v in recipe.items() if k != "seed"})
    cfg.validate()
    return cfg, int(recipe.get("seed", 0))


def pinned_candidates(protocol: Protocol, name: str = sn.EXPERT_WEIGHTS) -> list[Path]:
    """Where a pinned evaluator is looked for, in order: the protocol's file (committed with the
    repository), $TALKBENCH_WEIGHTS_<NAME> (a file, or a folder holding it under its name), and
    $TALKBENCH_HOME/experts/<protocol>/<name> (where a rebuilt copy is written)."""
    shipped = evaluator_file(protocol, name)
    out = [shipped]
    env = os.environ.get(f"TALKBENCH_WEIGHTS_{name.upper()}")
    if env:
        p = Path(env).expanduser()
        out.append(p / shipped.name if p.is_dir() else p)
    out.append(talkbench_home() / "experts" / protocol.id / shipped.name)
    return out


def resolve_pinned(protocol: Protocol, train_clips: list[Clip], device: str = "cpu",
                   progress: bool = True, allow_unpinned: bool = False) -> dict[str, Any]:
    """The protocol's pinned SyncNet expert: the first candidate file (`pinned_candidates`) whose
    sha256 is the pinned one; none: rebuilt from the recipe on the train split into
    $TALKBENCH_HOME and checked. A rebuild with another sha256 (CPU float reductions differ
    between machines) is refused with PinError, or used with ``"pinned": False`` when
    `allow_unpinned`."""
    pin = protocol.evaluators[sn.EXPERT_WEIGHTS]
    cfg, seed = recipe_config(pin["recipe"])
    entry = {"kind": "syncnet", "config": cfg.to_dict(), "seed": seed, "pinned_sha256": pin["sha256"]}
    wrong = []
    for path in pinned_candidates(protocol):
        if path.is_file():
            sha = file_sha256(path)
            if sha == pin["sha256"]:
                return {**entry, "path": str(path), "file": path.name, "sha256": sha, "pinned": True}
            wrong.append(f"{path} (sha256 {sha[:12]}...)")
    found = f"; found only {', '.join(wrong)}" if wrong else ""
    if not train_clips or not all(c.has_frames for c in train_clips):
        raise PinError(f"protocol {protocol.id}: the pinned SyncNet expert {pin['file']} (sha256 "
                       f"{pin['sha256'][:12]}...) is missing{found}, and there are no train clips "
                       f"with frames to rebuild it from; put the file at {pinned_candidates(protocol)[0]}")
    out = pinned_candidates(protocol)[-1]
    log.warning("pinned SyncNet expert %s missing%s: rebuilding it from its recipe", pin["file"], found)
    model, stats = train(train_clips, cfg, seed, device, progress)
    save_pinnable(out.with_name(out.stem + ".rebuilt.pt"), model, protocol, cfg, seed, stats)
    rebuilt = out.with_name(out.stem + ".rebuilt.pt")
    sha = file_sha256(rebuilt)
    if sha == pin["sha256"]:
        rebuilt.replace(out)
        return {**entry, "path": str(out), "file": out.name, "sha256": sha, "pinned": True}
    if not allow_unpinned:
        raise PinError(
            f"protocol {protocol.id}: the SyncNet expert rebuilt from its recipe has sha256 "
            f"{sha[:12]}..., not the pinned {pin['sha256'][:12]}... (training is not bit-identical "
            f"across CPUs and library versions), so its '(expert)' numbers would not be comparable "
            f"with published ones. Get the pinned file {pin['file']} (it ships with the repository; "
            f"or set TALKBENCH_WEIGHTS_{sn.EXPERT_WEIGHTS.upper()} to a copy), or pass "
            f"--allow-unpinned to score with the rebuilt one ({rebuilt}); those columns are then "
            f"marked unpinned.")
    log.warning("scoring with an UNPINNED SyncNet expert %s (sha256 %s, pinned %s)", rebuilt,
                sha[:12], pin["sha256"][:12])
    return {**entry, "path": str(rebuilt), "file": rebuilt.name, "sha256": sha, "pinned": False}


def save_pinnable(path: Path, model: sn.SyncNet, protocol: Protocol, cfg: SyncExpertConfig, seed: int,
                  stats: dict) -> None:
    """Write an expert whose bytes depend only on the network and its recipe (no losses or
    timings, which vary with the machine even when the weights do not)."""
    sn.save_expert(path, model, {**cfg.to_dict(), "seed": seed, "protocol": protocol.id,
                                 "train_clips": stats["clips"], "train_windows": stats["windows"]})


# ----------------------------------------------------------------------------------- quality
QUALITY_SHIFT = 5  # frames by which the audio of the "audio-shifted" copy of ground truth is delayed
QUALITY_TARGET = 0.9  # share of ground-truth test clips whose |AV offset| <= 1 that a pinned expert must reach


def quality(path: Path, test_clips: list[Clip], shift: int = QUALITY_SHIFT,
            progress: bool = True) -> dict[str, Any]:
    """The expert's own held-out quality on the ground-truth test clips.

    For each clip, the evaluation's inputs (`clip_inputs`) scored by `metrics.syncnet.evaluate`
    with the expert: ground truth; ``static`` (the first frame repeated, cropped with the same
    boxes, as the static baseline's prediction is); and ground truth with its audio delayed by
    `shift` frames (zeros in front, cut to length). Returns the share of clips whose |offset| <= 1,
    the mean LSE-C / LSE-D of each and the LSE-C margins of ground truth over the other two, and
    the share of shifted copies whose offset is found within +-1 frame of -`shift`.

    LSE-C is the sharpness of the distance curve at its *best* offset, wherever that is, so a good
    expert gives the shifted copy about ground truth's LSE-C (a margin near 0: the sync is there,
    only displaced); the offset it finds is what tells them apart. Static has no sync to find, so
    its margin should be clearly positive.
    """
    model = sn.load_syncnet(path)
    rows = []
    delay = shift * sn.SAMPLES_PER_FRAME
    for clip in tqdm(test_clips, desc="expert: quality", disable=not progress, leave=False):
        frames = clip.frames[..., ::-1]
        boxes = crops.smooth_boxes(crops.landmark_boxes(clip.landmarks))
        video = sn.syncnet_crops(frames, boxes)
        still = sn.syncnet_crops(np.repeat(frames[:1], len(frames), axis=0), boxes)
        clip.release_frames()
        audio = np.asarray(clip.audio)
        shifted = np.concatenate([np.zeros(delay, audio.dtype), audio[:len(audio) - delay]])
        if sn.num_windows(len(video), len(audio)) < 1:
            continue
        gt, st, sh = (sn.evaluate(model, v, a) for v, a in
                      ((video, audio), (still, audio), (video, shifted)))
        rows.append({"clip": clip.id, "offset": gt.offset, "lse_c": gt.conf, "lse_d": gt.min_dist,
                     "static_lse_c": st.conf, "shifted_lse_c": sh.conf, "shifted_offset": sh.offset})
    if not rows:
        raise ExpertError("no test clip is long enough for one SyncNet window")
    mean = lambda key: float(np.mean([r[key] for r in rows]))  # noqa: E731
    within = float(np.mean([abs(r["offset"]) <= 1 for r in rows]))
    return {
        "test_clips": len(rows),
        "within_1_frame": within,
        "target_within_1_frame": QUALITY_TARGET,
        "meets_target": within >= QUALITY_TARGET,
        "lse_c_ground_truth": mean("lse_c"),
        "lse_d_ground_truth": mean("lse_d"),
        "lse_c_static": mean("static_lse_c"),
        "lse_c_shifted": mean("shifted_lse_c"),
        "shift_frames": shift,
        # the delay found: audio delayed by `shift` frames is an offset of -shift (features.py)
        "shifted_within_1_frame": float(np.mean([abs(r["shifted_offset"] + shift) <= 1 for r in rows])),
        "margin_over_static": mean("lse_c") - mean("static_lse_c"),
        "margin_over_shifted": mean("lse_c") - mean("shifted_lse_c"),
        "clips": rows,
    }


# ----------------------------------------------------------------------------------- CLI
QUALITY_FILE = "_expert_syncnet.json"  # in the results folder (bench.results.EXPERT_PREFIX)


def pin_snippet(name: str, path: Path, file: str, cfg: SyncExpertConfig, seed: int) -> str:
    """The protocol YAML that pins the expert at `path` (to go under the protocol's top level)."""
    recipe = ", ".join(f"{k}: {'null' if v is None else v}" for k, v in {**cfg.to_dict(), "seed": seed}.items())
    return (f"evaluators:\n  {name}:\n    kind: syncnet\n    sha256: {file_sha256(path)}\n"
            f"    file: {file}\n    recipe: {{{recipe}}}\n")


def write_quality(protocol: Protocol, splits: dict[str, list[Clip]], evaluator: dict[str, Any],
                  out: Path, progress: bool = True) -> Path:
    """Measure the expert's held-out quality (`quality`) and write it to `out`/_expert_syncnet.json."""
    from bench.results import write_result

    start = time.perf_counter()
    q = quality(Path(evaluator["path"]), splits["test"], progress=progress)
    body = {"kind": "expert_quality", "expert": "syncnet", "protocol": protocol.id,
            "protocol_hash": protocol.hash, "sha256": evaluator["sha256"], "file": evaluator["file"],
            "pinned": evaluator.get("pinned"), "recipe": {**evaluator["config"], "seed": evaluator["seed"]},
            "train_clips": len(splits.get("train", [])), **q, "quality_s": time.perf_counter() - start}
    out.mkdir(parents=True, exist_ok=True)
    return write_result(out / QUALITY_FILE, body)


def _cmd_experts(args: argparse.Namespace) -> int:
    from bench.data.clips import load_splits
    from bench.protocol import load_protocol
    from bench.results import results_dir

    if args.kind not in EXPERT_KINDS:
        raise ValueError(f"unknown expert {args.kind!r}; known: {list(EXPERT_KINDS)}")
    protocol = load_protocol(args.protocol)
    splits = load_splits(protocol, not args.quiet, root=args.root)
    if args.action == "quality":
        evaluators = resolve(protocol, splits, args.device, not args.quiet,
                             allow_unpinned=args.allow_unpinned)
        if sn.EXPERT_WEIGHTS not in evaluators:
            raise ValueError(f"protocol {protocol.id} has no SyncNet expert to measure")
        out = results_dir(protocol, Path(args.results) if args.results else None)
        path = write_quality(protocol, splits, evaluators[sn.EXPERT_WEIGHTS], out, not args.quiet)
        print(quality_summary(read_quality(path)))
        print(f"written: {path}")
        return 0
    pin = protocol.evaluators.get(sn.EXPERT_WEIGHTS)
    if pin and not args.out:  # a pinned protocol: rebuild beside the cache and compare with the pin
        args.out = str(talkbench_home() / "experts" / protocol.id / (Path(pin["file"]).stem + ".rebuilt.pt"))
    try:
        if args.out:
            cfg, seed = recipe_config(pin["recipe"]) if pin else (SyncExpertConfig(), 0)
            for key in ("epochs", "width"):
                if getattr(args, key) is not None:
                    cfg = SyncExpertConfig(**{**cfg.to_dict(), key: getattr(args, key)})
            seed = args.seed if args.seed is not None else seed
            start = time.perf_counter()
            model, stats = train(splits["train"], cfg, seed, args.device, not args.quiet)
            path = Path(args.out)
            save_pinnable(path, model, protocol, cfg, seed, stats)
            sha = file_sha256(path)
            if pin:
                same = "the same as" if sha == pin["sha256"] else "NOT the same as"
                print(f"{protocol.id} pins {pin['file']} (sha256 {pin['sha256']}): this rebuild is {same} the pin")
            print(f"SyncNet expert for {protocol.id}: {path} ({path.stat().st_size} bytes, "
                  f"{time.perf_counter() - start:.0f} s)\nsha256 {sha}\n\nTo pin it, copy it to "
                  f"protocols/evaluators/{protocol.id}-syncnet-{sha[:8]}.pt and add to the protocol:\n")
            print(pin_snippet(sn.EXPERT_WEIGHTS, path, f"evaluators/{protocol.id}-syncnet-{sha[:8]}.pt",
                              cfg, seed))
            return 0
        path = ensure_syncnet(protocol, splits["train"], seed=args.seed or 0, device=args.device,
                              progress=not args.quiet, force=args.force)
    except ExpertError as exc:
        raise ValueError(str(exc)) from None
    print(f"SyncNet expert for {protocol.id}: {path}\nsha256 {file_sha256(path)}")
    return 0


def read_quality(path: Path) -> dict:
    import json

    return json.loads(Path(path).read_text())


def quality_summary(q: dict) -> str:
    return (f"expert {q['sha256'][:12]} on {q['test_clips']} ground-truth test clips: "
            f"{100 * q['within_1_frame']:.0f}% within +-1 frame (target {100 * q['target_within_1_frame']:.0f}%); "
            f"LSE-C ground truth {q['lse_c_ground_truth']:.3f}, static {q['lse_c_static']:.3f}, "
            f"audio shifted {q['shift_frames']} frames {q['lse_c_shifted']:.3f}")


def add_cli(subparsers: "argparse._SubParsersAction") -> argparse.ArgumentParser:
    p = subparsers.add_parser("experts", help="train metric experts on a protocol's train split, "
                                              "or measure their held-out quality")
    p.add_argument("action", choices=["train", "quality"])
    p.add_argument("kind", help="which expert: syncnet (for LSE-D / LSE-C)")
    p.add_argument("--protocol", required=True)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=None, help="training seed (default: the pinned recipe's, else 0)")
    p.add_argument("--out", help="train: write the expert here (from the protocol's pinned recipe, "
                                 "if any) and print the YAML that pins it")
    p.add_argument("--epochs", type=int, help="train --out: override the recipe's epochs")
    p.add_argument("--width", type=float, help="train --out: override the recipe's width")
    p.add_argument("--force", action="store_true", help="retrain even if a checkpoint exists")
    p.add_argument("--results", help="quality: results root (default: the repository's results/)")
    p.add_argument("--allow-unpinned", action="store_true",
                   help="quality: measure a rebuilt expert whose sha256 is not the pinned one")
    p.add_argument("--root", help="dataset root of a real dataset (default: $TALKBENCH_DATA_<DATASET>)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_experts)
    return p
