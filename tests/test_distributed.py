"""core.distributed: a world of one without a launcher, and a real 2-rank gloo group."""

from __future__ import annotations

import os
import socket

import torch.multiprocessing as mp

from core import distributed


def test_world_of_one_is_the_identity(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    w = distributed.init()
    assert (w.rank, w.size, w.is_main, w.distributed) == (0, 1, True, False)
    assert distributed.shard([3, 1, 2]) == [3, 1, 2]
    assert distributed.gather({"a": 1}) == [{"a": 1}]
    assert distributed.broadcast("x") == "x"
    distributed.barrier()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, size: int, port: int, out) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(size), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), TALKBENCH_DIST_BACKEND="gloo")
    w = distributed.init()
    try:
        mine = distributed.shard(list(range(7)), w)
        got = distributed.gather(mine, w)
        said = distributed.broadcast(f"from {w.rank}", w)
        out.put((w.rank, w.size, w.backend, mine, got, said))
        distributed.barrier(w)
    finally:
        distributed.shutdown()


def test_two_gloo_ranks_split_and_gather():
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, 2, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = sorted(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    (r0, s0, b0, mine0, got0, said0), (r1, s1, b1, mine1, got1, said1) = results
    assert (r0, r1, s0, s1, b0) == (0, 1, 2, 2, "gloo")
    assert mine0 == [0, 2, 4, 6] and mine1 == [1, 3, 5]
    assert got0 == got1 == [[0, 2, 4, 6], [1, 3, 5]]
    assert said0 == said1 == "from 0"
