"""Data-parallel training (baselines.data_parallel): batch shares and weights, and 2 gloo ranks
fitting a small TorchMethod through bench.runner.train_or_load to the parameters one process gets,
with rank 0 alone writing the run folder (a resumed fit included)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from baselines import data_parallel
from baselines.torch_method import TRAIN_LOG, TRAIN_STATE, TorchMethod, TorchMethodConfig, random_windows
from core import distributed
from core.distributed import World
from core.types import Clip

pytestmark = pytest.mark.usefixtures("one_thread")

SPF = 640  # 16 kHz at 25 fps


class ProbeNet(nn.Module):
    """A landmark regressor, plus what DDP must cope with: a submodule only the loss calls (as
    SPEAR's discriminator) and a parameter that never gets a gradient (as a wav2vec2 mask embedding)."""

    def __init__(self, batch_norm: bool = False) -> None:
        super().__init__()
        self.first = nn.Linear(SPF, 24)
        self.norm = nn.BatchNorm1d(24) if batch_norm else nn.LayerNorm(24)
        self.net = nn.Sequential(nn.Tanh(), nn.Linear(24, 136))
        self.critic = nn.Linear(136, 1)
        self.unused = nn.Parameter(torch.ones(3))

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        h = self.first(audio)
        return self.net(self.norm(h.flatten(0, 1)).view_as(h))


class Probe(TorchMethod):
    """A small landmark regressor: each frame's audio samples -> its 136 landmark coordinates."""

    name = "ddp_probe"
    inputs = frozenset({"audio"})
    outputs = frozenset({"landmarks"})

    batch_norm = False

    def build_model(self) -> nn.Module:
        return ProbeNet(self.batch_norm)

    def make_batch(self, clips, rng, device, starts=None):
        w = random_windows(clips, rng, self.window_length(clips[0].fps), starts)
        audio = torch.from_numpy(w.audio.reshape(len(clips), w.frames, SPF)).to(device)
        target = (w.landmarks - w.identity[:, None]) / 10.0
        return {"audio": audio, "target": torch.from_numpy(target.reshape(len(clips), w.frames, 136)).to(device)}

    def compute_loss(self, model, batch):
        pred = model(batch["audio"])
        return F.mse_loss(pred, batch["target"]) + 0.1 * (model.critic(pred) ** 2).mean()


CASES = {  # uneven shares (3 -> 2 + 1), and a batch of 1 (rank 1's share empty: weight 0)
    "per_clip": dict(epochs=3, batch_size=3, window_frames=8, lr=1e-2, lr_min=1e-3, grad_clip=1.0, threads=1),
    "all_windows": dict(epochs=2, batch_size=1, window_frames=16, lr=1e-2, epoch_mode="all_windows", threads=1),
    "resumed": dict(epochs=3, batch_size=2, window_frames=8, lr=1e-2, threads=1),
}


class BatchNormProbe(Probe):
    name = "ddp_probe_bn"
    batch_norm = True  # SyncBatchNorm under NCCL: the global batch's statistics


def make_clips() -> list[Clip]:
    rng = np.random.default_rng(7)
    clips = []
    for i, frames in enumerate((20, 27, 33, 24, 30)):
        base = rng.uniform(50, 200, (1, 68, 2))
        lmk = base + np.cumsum(rng.normal(0, 0.5, (frames, 68, 2)), axis=0)
        clips.append(Clip(f"c{i}", "s", rng.normal(0, 0.1, frames * SPF).astype(np.float32),
                          lmk.astype(np.float32)))
    return clips


def make_method(case: str) -> Probe:
    if case == "batch_norm":
        return BatchNormProbe(TorchMethodConfig(**CASES["per_clip"]))
    return Probe(TorchMethodConfig(**CASES[case]))


def test_local_part_shares_and_weights():
    two = [World(rank=r, size=2) for r in range(2)]
    assert [data_parallel.local_part(5, w) for w in two] == [(slice(0, 3), 1.2), (slice(3, 5), 0.8)]
    assert [data_parallel.local_part(4, w) for w in two] == [(slice(0, 2), 1.0), (slice(2, 4), 1.0)]
    assert [data_parallel.local_part(1, w) for w in two] == [(slice(0, 1), 2.0), (slice(0, 1), 0.0)]
    three = [data_parallel.local_part(7, World(rank=r, size=3)) for r in range(3)]
    assert [p for p, _ in three] == [slice(0, 3), slice(3, 5), slice(5, 7)]
    assert sum(w for _, w in three) == pytest.approx(3.0)  # the weights average to 1
    assert data_parallel.local_part(5, World()) == (slice(0, 5), 1.0)
    batch = {"x": torch.arange(10).reshape(5, 2), "y": torch.zeros(5)}
    assert data_parallel.take(batch, slice(3, 5), 5)["x"].tolist() == [[6, 7], [8, 9]]
    with pytest.raises(ValueError, match="first axis"):
        data_parallel.take({"x": torch.zeros(5), "scale": torch.ones(2)}, slice(0, 2), 5)


def test_world_of_one_leaves_the_loss_alone():
    model = nn.Linear(2, 1)
    replica = data_parallel.wrap(model, lambda m, b: (m(b["x"]) ** 2).mean(), World())
    batch = {"x": torch.ones(3, 2)}
    loss = replica(batch)
    assert torch.equal(loss, (model(batch["x"]) ** 2).mean())
    scaled, value = data_parallel.batch_loss(replica, batch, 3, World())
    assert torch.equal(scaled, loss) and float(value) == float(loss.detach())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_training_device_is_the_local_gpu():
    assert data_parallel.training_device("cuda", World(rank=3, size=4, local_rank=1)) == torch.device("cuda", 1)
    assert data_parallel.training_device("cuda", World()) == torch.device("cuda")
    assert data_parallel.training_device("cuda:0", World(rank=1, size=2, local_rank=1)) == torch.device("cuda", 0)
    assert data_parallel.training_device("cpu", World(rank=1, size=2, local_rank=1)) == torch.device("cpu")


def _worker(rank: int, size: int, port: int, root: str, out, backend: str = "gloo", device: str = "cpu",
            cases: tuple[str, ...] = tuple(CASES)) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(size), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), TALKBENCH_DIST_BACKEND=backend)
    torch.set_num_threads(1)
    from bench.runner import train_or_load

    w = distributed.init()
    try:
        clips = make_clips()
        got = {}
        for case in cases:
            method = make_method(case)
            writes = {"save": 0, "state": 0}
            save, save_state = method.save, method._save_train_state

            def counted_save(path, _save=save):
                writes["save"] += 1
                return _save(path)

            def counted_state(*args, _save=save_state):
                writes["state"] += 1
                return _save(*args)

            method.save, method._save_train_state = counted_save, counted_state
            path = train_or_load(method, {"train": clips, "val": clips[:2]}, Path(root) / case, device, seed=3)
            got[case] = (method.state(), method.train_log, writes, str(path))
        out.put((w.rank, w.size, got))
        distributed.barrier(w)
    finally:
        distributed.shutdown()


def test_two_gloo_ranks_fit_what_one_process_fits(tmp_path):
    clips = make_clips()
    # "resumed": a one-process fit stopped after its first epoch left its state in the run folder
    interrupted = make_method("resumed")

    def stop(epoch, record):
        raise KeyboardInterrupt

    interrupted.on_epoch_end = stop
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit(clips, clips[:2], seed=3, workdir=tmp_path / "resumed")
    assert (tmp_path / "resumed" / TRAIN_STATE).exists()

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, 2, port, str(tmp_path), queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = dict((r, got) for r, size, got in (queue.get(timeout=180) for _ in procs))
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0

    for case in CASES:
        one = make_method(case)
        one.fit(clips, clips[:2], seed=3)
        expected = one.state()
        (state0, log0, writes0, path0), (state1, log1, writes1, _) = results[0][case], results[1][case]
        assert sorted(state0) == sorted(expected)
        for key in expected:  # the same update as one process, up to float summation order
            # (Adam's normalised steps turn last-bit differences of near-zero gradients into
            # differences of up to ~1e-6 on single weights, measured: compared to each tensor's
            # norm, and elementwise to a thousandth of one step of lr 1e-2)
            diff = np.linalg.norm(state0[key] - expected[key]) / max(np.linalg.norm(expected[key]), 1e-12)
            print(f"{case} {key}: relative difference {diff:.2e}, max abs "
                  f"{np.abs(state0[key] - expected[key]).max():.2e}")
            assert diff < 1e-5, (case, key, diff)
            np.testing.assert_allclose(state0[key], expected[key], rtol=1e-4, atol=1e-5, err_msg=f"{case} {key}")
            assert np.array_equal(state0[key], state1[key]), (case, key)  # rank 1 loaded rank 0's file
        # the whole batch's loss is what both ranks log, as one process would
        np.testing.assert_allclose([r["train_loss"] for r in log0], [r["train_loss"] for r in one.train_log],
                                   rtol=1e-5)
        assert [r["train_loss"] for r in log1] == [r["train_loss"] for r in log0]
        resumed_epochs = 1 if case == "resumed" else 0  # epochs run by the interrupted process
        assert [r["world_size"] for r in log0] == [1] * resumed_epochs + [2] * (len(log0) - resumed_epochs)
        # rank 0 alone wrote the checkpoint and the training state
        assert writes0 == {"save": 1, "state": CASES[case]["epochs"] - resumed_epochs}, case
        assert writes1 == {"save": 0, "state": 0}, case
        assert Path(path0) == tmp_path / case / "model.ckpt.npz" and Path(path0).exists()
        logged = json.loads((tmp_path / case / TRAIN_LOG).read_text())["epochs"]
        assert [r["world_size"] for r in logged] == [1] * resumed_epochs + [2] * (len(logged) - resumed_epochs)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL with 2 ranks needs 2 GPUs")
def test_two_nccl_ranks_with_sync_batch_norm_fit_what_one_gpu_fits(tmp_path):
    """On GPUs the batch norm layers are SyncBatchNorm: statistics of the whole batch, as one process."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, 2, port, str(tmp_path), queue, "nccl", "cuda", ("batch_norm",)))
             for r in range(2)]
    for p in procs:
        p.start()
    results = dict((r, got) for r, size, got in (queue.get(timeout=300) for _ in procs))
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    one = make_method("batch_norm")
    one.fit(make_clips(), make_clips()[:2], device="cuda", seed=3)
    expected = one.state()
    state0, _, writes0, _ = results[0]["batch_norm"]
    assert writes0["save"] == 1 and results[1]["batch_norm"][2]["save"] == 0
    for key in expected:  # GPU kernels are not bit-reproducible: a looser, norm-relative tolerance
        diff = np.linalg.norm(state0[key] - expected[key]) / max(np.linalg.norm(expected[key]), 1e-12)
        assert diff < 1e-4, (key, diff)
