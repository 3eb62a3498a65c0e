"""The shared trainer of every learned torch method, and the geometry / data helpers they share.

A learned method subclasses `TorchMethod` and writes four things: `build_model` (a fresh
`nn.Module` from `self.config`), `make_batch` (one training window of `window_length(fps)` frames
from each of some clips, at random starts or at the starts it is given), `compute_loss` (a scalar
from a model and a batch) and `infer` (a whole clip of any length -> `Prediction`). The base class
owns everything else:

- `fit`: Adam(lr) with CosineAnnealingLR(T_max=epochs, eta_min=lr_min), stepped once per epoch
  (the KFusion paper's schedule). What an epoch is depends on `config.epoch_mode`:
  - "all_windows" (the `paper` presets): a pass over the training data. Every train clip is tiled
    by non-overlapping windows of the training length (`window_starts` with hop = window; the last
    one flush with the clip's end, so every frame is in some window), and the epoch visits each
    window exactly once: windows are shuffled with the seeded generator, batched `batch_size` at a
    time among windows of the same length (a clip shorter than the window is one whole-clip window,
    never cropped to a neighbour's length), and the batch order is shuffled. So the papers' epoch
    counts mean what they mean there: that many passes over the training data.
  - "one_per_clip" (the `tiny` presets, and the default): ceil(len(train) / batch_size) steps over
    a seeded shuffle of the train clips, one random window from each clip. On clips longer than
    the window this sees only part of the data per epoch; the tiny presets' epoch counts are
    talkbench's tuning for this sampling, not the papers' counts.
  The training length is `window_frames`, or `round(window_seconds x fps)` frames when
  `window_seconds` > 0 (`window_length(fps)`; the clips' fps is known at fit time, so "one second"
  stays one second at 25 and at 30 fps). A tqdm bar shows the running loss; the val loss is
  computed once per epoch on fixed windows (one per val clip, the same ones every epoch, so the
  curve compares like with like). `workdir/train_log.json` and `workdir/loss_curve.png` record
  the losses, and each epoch's record its number of steps and windows.
- Gradient clipping (`grad_clip`, max global norm; 0 = off) is in no paper of the three landmark
  methods; the `paper` presets leave it off and each method's docstring says why its `tiny`
  preset uses it.
- Resume: after every epoch `workdir/last_train_state.pt` holds model, optimizer, scheduler, epoch,
  losses and every random state (numpy generator, torch CPU / CUDA). A fit that finds it (written
  with the same config and seed) continues from it, and ends with the same weights, bit for bit on
  CPU, as a fit that was never interrupted.
- Determinism: `torch.manual_seed(seed)` before the model is built, one numpy generator seeded with
  `seed` for every data choice, and `torch.use_deterministic_algorithms(True)` on CPU during the fit
  (the previous setting is restored afterwards): the same seed gives the same checkpoint hash.
  `config.threads` (if set) pins torch's intra-op thread count during fit and predict.
- Data-parallel under torchrun (`baselines.data_parallel`): every rank runs this loop from the same
  seed (same initial weights, same batch plan and random windows), keeps its share of each batch
  with its loss weighted by the share, and DistributedDataParallel averages the gradients: the
  step one process takes on the whole batch, up to float summation order. The logged loss is the
  whole batch's. Rank 0 alone reads the resume state (broadcast to the others) and writes the
  state and log; each epoch's record holds `world_size`.
- `state` / `set_state`: the model's `state_dict` as numpy arrays (float32 / integer, sorted keys).
- `predict`: eval mode, `no_grad`, on the device of the last fit (cpu after a load; set
  `method.device` to move it).
"""

from __future__ import annotations

import json
import logging
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Optional, Sequence

import numpy as np
import torch
from tqdm import tqdm

from baselines import data_parallel
from baselines.base import Method, MethodConfig
from core import distributed
from core.types import MethodInput, Prediction
from core.constants import EMOTIONS  # index = emotion embedding row
from core.types import Clip

log = logging.getLogger(__name__)

TRAIN_STATE = "last_train_state.pt"
TRAIN_LOG = "train_log.json"
LOSS_CURVE = "loss_curve.png"
EPOCH_MODES = ("one_per_clip", "all_windows")  # what an epoch is (module docstring)



def emotion_index(emotion: Optional[str]) -> int:
    """Row of `emotion` in EMOTIONS (CREMA-D's six are a subset); None counts as neutral."""
    if emotion is None:
        return 0
    name = emotion.lower()
    aliases = {"surprise": "surprised", "disgust": "disgusted", "anger": "angry", "fearful": "fear",
               "sadness": "sad", "happiness": "happy"}
    name = aliases.get(name, name)
    if name not in EMOTIONS:
        raise ValueError(f"unknown emotion {emotion!r}; known: {list(EMOTIONS)}")
    return EMOTIONS.index(name)


# ----------------------------------------------------------------------------- geometry

def face_scales(landmarks68: np.ndarray | torch.Tensor):
    """Jaw width (|p16 - p0|) of `... x 68 x 2` landmarks, shape `...` (as baselines.reference.face_scale)."""
    diff = landmarks68[..., 16, :] - landmarks68[..., 0, :]
    if isinstance(diff, torch.Tensor):
        return torch.linalg.vector_norm(diff, dim=-1)
    return np.linalg.norm(diff, axis=-1)


def landmarks_normalise(lmk, identity):
    """Pixel landmarks `... x P x 2` -> identity-centred coordinates in units of the identity's jaw width.

    `identity` is `... x 68 x 2` with the same leading dims as `lmk` minus its time axis if `lmk`
    has one more dim (a sequence `T x 68 x 2` against one identity `68 x 2`, or batched). Centre =
    mean of the identity's 68 points. Works on numpy arrays and torch tensors.
    """
    centre, scale = _frame_of(identity)
    if lmk.ndim == identity.ndim + 1:  # a time axis on lmk only
        centre, scale = centre[..., None, :, :], scale[..., None, :, :]
    return (lmk - centre) / scale


def landmarks_denormalise(norm, identity):
    """Inverse of `landmarks_normalise`."""
    centre, scale = _frame_of(identity)
    if norm.ndim == identity.ndim + 1:
        centre, scale = centre[..., None, :, :], scale[..., None, :, :]
    return norm * scale + centre


def _frame_of(identity):
    centre = identity.mean(-2, keepdims=True) if isinstance(identity, np.ndarray) else identity.mean(-2, keepdim=True)
    scale = face_scales(identity)[..., None, None]
    return centre, scale


# ----------------------------------------------------------------------------- data windows

def samples_per_frame(clip: Clip, whole: bool = True) -> int | float:
    """Audio samples per video frame. `whole` (default): an int, or ValueError when the rate is not
    a whole number of samples per frame; `whole=False`: the exact ratio (16 kHz at 30 fps: 533.33),
    an int when it is whole."""
    spf = clip.sample_rate / clip.fps
    if abs(spf - round(spf)) <= 1e-6:
        return int(round(spf))
    if whole:
        raise ValueError(f"clip {clip.id}: {clip.sample_rate} Hz is not a whole number of samples per "
                         f"frame at {clip.fps} fps")
    return spf


def frame_audio(audio: np.ndarray, spf: int | float, start: int, frames: int) -> np.ndarray:
    """The samples under frames [start, start + frames): round(frames * spf) samples from sample
    round(start * spf), zero-padded at the end. With a whole `spf` that is exactly frames * spf
    samples from start * spf; with a fractional one (16 kHz at 30 fps) windows of the same length
    still have the same number of samples (30 frames: 16000), and a window starts where
    `bench.data.clips.cut_clip` would cut its audio."""
    a0, n = int(round(start * spf)), int(round(frames * spf))
    seg = np.asarray(audio[a0:a0 + n], dtype=np.float32)
    if len(seg) < n:
        seg = np.pad(seg, (0, n - len(seg)))
    return seg


@dataclass
class Windows:
    """A batch of aligned training windows (numpy): audio B x round(W*spf), landmarks B x W x 68 x 2,
    identity B x 68 x 2 (each clip's first frame, exactly what `predict` is given), emotion B."""

    audio: np.ndarray
    landmarks: np.ndarray
    identity: np.ndarray
    emotion: np.ndarray
    starts: np.ndarray
    frames: int


def window_starts(num_frames: int, window: int, hop: int) -> list[int]:
    """Starts of windows of `window` frames covering [0, num_frames), the last one flush with the end."""
    if num_frames <= window:
        return [0]
    hop = max(1, hop)
    starts = list(range(0, num_frames - window + 1, hop))
    if starts[-1] != num_frames - window:
        starts.append(num_frames - window)
    return starts


def crop_starts(clips: list[Clip], rng: np.random.Generator, window_frames: int,
                starts: Optional[Sequence[int]] = None) -> tuple[int, list[int]]:
    """(length, start per clip) of one training window per clip, length = min(window_frames, the
    shortest clip). `starts` None: drawn uniformly from `rng` (one draw per clip, in order); given
    (the trainer's "all_windows" epochs): checked to fit and used as they are, `rng` untouched."""
    if not clips:
        raise ValueError("no clips to cut training windows from")
    length = min([int(window_frames)] + [c.num_frames for c in clips])
    if starts is None:
        return length, [int(rng.integers(0, clip.num_frames - length + 1)) for clip in clips]
    starts = [int(s) for s in starts]
    if len(starts) != len(clips):
        raise ValueError(f"{len(starts)} window starts for {len(clips)} clips")
    for clip, start in zip(clips, starts):
        if not 0 <= start <= clip.num_frames - length:
            raise ValueError(f"clip {clip.id}: a {length}-frame window at frame {start} does not fit "
                             f"its {clip.num_frames} frames")
    return length, starts


def epoch_windows(clips: list[Clip], window_frames: int, batch_size: int,
                  rng: Optional[np.random.Generator]) -> list[list[tuple[int, int]]]:
    """One "all_windows" epoch: batches of (clip index, start) that visit every window once.

    Each clip is tiled by `window_starts(n, w, w)` with w = min(window_frames, n) (non-overlapping,
    the last window flush with the end). Windows are grouped by length, shuffled within the group,
    cut into batches of `batch_size`, and the batches are shuffled; `rng` None keeps the order (used
    to count the steps, which do not depend on the shuffle).
    """
    groups: dict[int, list[tuple[int, int]]] = {}
    for i, clip in enumerate(clips):
        w = min(int(window_frames), clip.num_frames)
        groups.setdefault(w, []).extend((i, s) for s in window_starts(clip.num_frames, w, w))
    bs = max(1, int(batch_size))
    batches = []
    for length in sorted(groups):
        items = groups[length]
        if rng is not None:
            items = [items[k] for k in rng.permutation(len(items))]
        batches += [items[k:k + bs] for k in range(0, len(items), bs)]
    if rng is not None:
        batches = [batches[k] for k in rng.permutation(len(batches))]
    return batches


def random_windows(clips: list[Clip], rng: np.random.Generator, window_frames: int,
                   starts: Optional[Sequence[int]] = None) -> Windows:
    """One window per clip, all of length min(window_frames, the shortest clip's length), at random
    starts (or at `starts`, see `crop_starts`)."""
    if not clips:
        raise ValueError("random_windows: no clips")
    length, starts = crop_starts(clips, rng, window_frames, starts)
    spf = samples_per_frame(clips[0], whole=False)
    audio, lmk, ident, emo = [], [], [], []
    for clip, start in zip(clips, starts):
        audio.append(frame_audio(clip.audio, spf, start, length))
        lmk.append(clip.landmarks[start:start + length])
        ident.append(clip.landmarks[0])
        emo.append(emotion_index(clip.emotion))
    return Windows(np.stack(audio), np.stack(lmk).astype(np.float32), np.stack(ident).astype(np.float32),
                   np.array(emo, dtype=np.int64), np.array(starts), length)


# ----------------------------------------------------------------------------- config + trainer

@dataclass
class TorchMethodConfig(MethodConfig):
    """Fields every TorchMethod config has (subclasses add theirs, all with defaults)."""

    epochs: int = 10
    lr: float = 3e-4
    lr_min: float = 1e-6
    batch_size: int = 8
    window_frames: int = 32  # training crop length in video frames (when window_seconds is 0)
    window_seconds: float = 0.0  # > 0: the training crop is this many seconds at the clips' fps
    epoch_mode: str = "one_per_clip"  # "one_per_clip" or "all_windows" (see the module docstring)
    log_every: int = 50  # steps between log lines (the progress bar updates every step)
    grad_clip: float = 0.0  # max global grad norm; 0 = off
    weight_decay: float = 0.0  # Adam's L2 penalty (0 = plain Adam, as the papers)
    # torch intra-op threads during fit / predict (restored afterwards); 0 = torch's default. Small
    # models gain nothing from more threads and lose a lot when another process shares the cores
    # (OpenMP workers wait on each other); a fixed count also keeps CPU results independent of the
    # machine's core count.
    threads: int = 0

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"tiny": {}, "paper": {}}


def _to_numpy(tensor: torch.Tensor) -> np.ndarray:
    t = tensor.detach().cpu()
    if t.is_floating_point():
        t = t.to(torch.float32)
    return t.numpy().copy()


class TorchMethod(Method):
    """Abstract base of every learned torch method (see the module docstring)."""

    trainable = True
    Config: ClassVar[type[MethodConfig]] = TorchMethodConfig

    def __init__(self, config: Optional[MethodConfig] = None) -> None:
        super().__init__(config)
        self.model: Optional[torch.nn.Module] = None
        self.device: str = "cpu"
        # Called after each finished epoch (its state already saved) with (epoch, log record):
        # progress hooks, early aborts, and the tests' simulated interruptions.
        self.on_epoch_end: Optional[Callable[[int, dict], None]] = None
        self.train_log: list[dict] = []

    # -- to implement --------------------------------------------------------------------
    def build_model(self) -> torch.nn.Module:
        raise NotImplementedError

    def make_batch(self, clips: list[Clip], rng: np.random.Generator, device,
                   starts: Optional[Sequence[int]] = None) -> dict[str, torch.Tensor]:
        """One training window of `window_length(fps)` frames from each clip (`crop_starts`): at
        random starts drawn from `rng`, or at `starts` (one per clip) in "all_windows" epochs."""
        raise NotImplementedError

    def compute_loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def infer(self, model: torch.nn.Module, inp: MethodInput, device) -> Prediction:
        raise NotImplementedError

    # -- optional hooks ------------------------------------------------------------------
    def trainable_parameters(self, model: torch.nn.Module) -> list[torch.nn.Parameter]:
        return [p for p in model.parameters() if p.requires_grad]

    # -- windows -------------------------------------------------------------------------
    def window_length(self, fps: float) -> int:
        """Training window in frames at `fps`: round(window_seconds x fps) if window_seconds > 0,
        else window_frames."""
        seconds = float(getattr(self.config, "window_seconds", 0.0) or 0.0)
        if seconds < 0:
            raise ValueError(f"{self.name}: window_seconds must be >= 0, got {seconds}")
        if seconds:
            return max(1, int(round(seconds * float(fps))))
        return int(self.config.window_frames)

    # -- training ------------------------------------------------------------------------
    def fit(self, train: list[Clip], val: list[Clip], *, device: str = "cpu", seed: int = 0,
            workdir: Optional[Path] = None) -> None:
        if not train:
            raise ValueError(f"{self.name}: fit needs at least one training clip")
        cfg = self.config
        world = distributed.world()
        device = data_parallel.training_device(device, world)
        was_deterministic = torch.are_deterministic_algorithms_enabled()
        if device.type == "cpu":
            torch.use_deterministic_algorithms(True)
        try:
            with torch_threads(getattr(cfg, "threads", 0)):
                self._fit(train, val, device, seed, Path(workdir) if workdir else None, cfg, world)
        finally:
            torch.use_deterministic_algorithms(was_deterministic)

    def _fit(self, train, val, device, seed, workdir, cfg, world) -> None:
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        model = self.build_model().to(device)
        params = self.trainable_parameters(model)
        optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=getattr(cfg, "weight_decay", 0.0))
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, cfg.epochs),
                                                               eta_min=cfg.lr_min)
        mode = getattr(cfg, "epoch_mode", "one_per_clip")
        if mode not in EPOCH_MODES:
            raise ValueError(f"{self.name}: epoch_mode must be one of {list(EPOCH_MODES)}, not {mode!r}")
        fps = {float(c.fps) for c in train}
        if getattr(cfg, "window_seconds", 0.0) and len(fps) > 1:
            raise ValueError(f"{self.name}: window_seconds needs one frame rate, the train clips have {sorted(fps)}")
        window = self.window_length(train[0].fps)
        if mode == "all_windows":
            unshuffled = epoch_windows(train, window, cfg.batch_size, None)
            steps_per_epoch, windows_per_epoch = len(unshuffled), sum(len(b) for b in unshuffled)
        else:
            steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
            windows_per_epoch = len(train)
        history: list[dict] = []
        start_epoch = 0
        # rank 0 alone reads and writes the run folder (the other ranks get its resume state)
        if not world.is_main:
            workdir = None
        state_path = workdir / TRAIN_STATE if workdir else None
        identity = {"method": self.name, "config": self.config.hash(), "seed": seed,
                    "train": [c.id for c in train]}
        saved = None
        if state_path is not None and state_path.exists():
            # on the CPU: RNG states must stay CPU tensors; load_state_dict moves weights and moments
            saved = torch.load(state_path, map_location="cpu", weights_only=False)
        saved = distributed.broadcast(saved, world)
        if saved is not None:
            if saved.get("identity") == identity:
                model.load_state_dict(saved["model"])
                optimizer.load_state_dict(saved["optimizer"])
                scheduler.load_state_dict(saved["scheduler"])
                rng.bit_generator.state = saved["numpy_rng"]
                torch.set_rng_state(saved["torch_rng"])
                if saved.get("cuda_rng") is not None and torch.cuda.is_available():
                    torch.cuda.set_rng_state_all(saved["cuda_rng"])
                start_epoch, history = saved["epoch"], saved["history"]
                log.info("%s: resuming from %s at epoch %d/%d", self.name, state_path, start_epoch, cfg.epochs)
            else:
                log.warning("%s: ignoring %s, written by another config, seed or train set",
                            self.name, state_path)
        val_batches = self._val_batches(val, seed, device) if val else []
        self.model, self.device = model, str(device)
        replica = data_parallel.wrap(model, self.compute_loss, world)  # batch -> loss
        step = start_epoch * steps_per_epoch
        bar = tqdm(range(start_epoch, cfg.epochs), desc=f"fit {self.name}", initial=start_epoch,
                   total=cfg.epochs, leave=False, disable=None if world.is_main else True)
        for epoch in bar:
            model.train()
            if mode == "all_windows":
                plan = epoch_windows(train, window, cfg.batch_size, rng)
            else:
                order = rng.permutation(len(train))
                plan = [order[i * cfg.batch_size:(i + 1) * cfg.batch_size] for i in range(steps_per_epoch)]
            losses = []
            t0, cpu0 = time.perf_counter(), time.process_time()
            for i, chosen in enumerate(plan):
                if mode == "all_windows":
                    clips = [train[j] for j, _ in chosen]
                    batch = self.make_batch(clips, rng, device, starts=[s for _, s in chosen])
                else:
                    clips = [train[j] for j in chosen]
                    batch = self.make_batch(clips, rng, device)
                # this rank's share of the batch (all of it in a world of one); `value` is the
                # whole batch's loss, the same on every rank
                loss, value = data_parallel.batch_loss(replica, batch, len(clips), world)
                if not torch.isfinite(value):
                    raise FloatingPointError(f"{self.name}: loss is {value.item()} at epoch {epoch} step {i}")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                optimizer.step()
                losses.append(float(value))
                step += 1
                bar.set_postfix(loss=f"{np.mean(losses):.4g}")
                if cfg.log_every and step % cfg.log_every == 0:
                    log.info("%s: epoch %d step %d loss %.5g", self.name, epoch, step, losses[-1])
            record = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)),
                      "lr": float(optimizer.param_groups[0]["lr"]), "seconds": time.perf_counter() - t0,
                      "cpu_seconds": time.process_time() - cpu0, "steps": len(plan), "windows": windows_per_epoch,
                      "world_size": world.size}
            scheduler.step()
            if val_batches:
                record["val_loss"] = self._val_loss(model, val_batches)
            history.append(record)
            self.train_log = history
            if state_path is not None:
                self._save_train_state(state_path, identity, model, optimizer, scheduler, rng, epoch + 1, history)
                self._write_log(workdir, history, plot=False)
            if self.on_epoch_end is not None:
                self.on_epoch_end(epoch + 1, record)
        bar.close()
        self.train_log = history
        if workdir is not None:
            self._write_log(workdir, history, plot=True)
        model.eval()

    def _val_batches(self, val: list[Clip], seed: int, device) -> list[dict[str, torch.Tensor]]:
        rng = np.random.default_rng([seed, 1])  # fixed windows, independent of the training draws
        bs = self.config.batch_size
        return [self.make_batch(val[i:i + bs], rng, device) for i in range(0, len(val), bs)]

    def _val_loss(self, model, batches) -> float:
        model.eval()
        with torch.no_grad():
            value = float(np.mean([float(self.compute_loss(model, b)) for b in batches]))
        model.train()
        return value

    @staticmethod
    def _save_train_state(path: Path, identity, model, optimizer, scheduler, rng, epoch, history) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        blob = {"identity": identity, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "numpy_rng": rng.bit_generator.state,
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "epoch": epoch, "history": history}
        tmp = path.with_name(path.name + ".tmp")
        torch.save(blob, tmp)
        tmp.replace(path)

    def _write_log(self, workdir: Path, history: list[dict], plot: bool) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / TRAIN_LOG).write_text(json.dumps(
            {"method": self.name, "config": self.config.to_dict(), "epochs": history}, indent=1) + "\n")
        if plot and history:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
            epochs = [r["epoch"] for r in history]
            ax.plot(epochs, [r["train_loss"] for r in history], label="train")
            if any("val_loss" in r for r in history):
                ax.plot([r["epoch"] for r in history if "val_loss" in r],
                        [r["val_loss"] for r in history if "val_loss" in r], label="val")
            ax.set_yscale("log")
            ax.set_xlabel("epoch")
            ax.set_ylabel("loss")
            ax.set_title(self.name)
            ax.legend()
            fig.tight_layout()
            fig.savefig(workdir / LOSS_CURVE)
            plt.close(fig)

    # -- state ---------------------------------------------------------------------------
    def state(self) -> dict[str, np.ndarray]:
        if self.model is None:
            raise RuntimeError(f"{self.name}: no model yet; fit or load first")
        sd = self.model.state_dict()
        return {k: _to_numpy(sd[k]) for k in sorted(sd)}

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        if self.model is None:
            self.model = self.build_model().to(self.device)
        own = self.model.state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            raise ValueError(f"{self.name}: checkpoint does not match the model: "
                             f"missing {missing[:10]}{' ...' if len(missing) > 10 else ''} "
                             f"({len(missing)}), unexpected {unexpected[:10]}"
                             f"{' ...' if len(unexpected) > 10 else ''} ({len(unexpected)})")
        tensors = {}
        for key, value in state.items():
            ref = own[key]
            if tuple(value.shape) != tuple(ref.shape):
                raise ValueError(f"{self.name}: checkpoint array {key} has shape {tuple(value.shape)}, "
                                 f"the model wants {tuple(ref.shape)}")
            tensors[key] = torch.as_tensor(np.asarray(value)).to(dtype=ref.dtype)
        self.model.load_state_dict(tensors, strict=True)
        self.model.eval()

    # -- inference -----------------------------------------------------------------------
    def predict(self, inp: MethodInput) -> Prediction:
        if self.model is None:
            raise RuntimeError(f"{self.name}: fit or load before predict")
        device = torch.device(self.device)
        self.model.to(device).eval()
        with torch.no_grad(), torch_threads(getattr(self.config, "threads", 0)):
            return self.infer(self.model, inp, device)


@contextmanager
def torch_threads(count: int):
    """Run with `count` torch intra-op threads (0: leave as is), restoring the previous count."""
    if not count:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(count))
    try:
        yield
    finally:
        torch.set_num_threads(before)
