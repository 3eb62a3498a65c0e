"""torch.distributed for talkbench, written once: who this process is, how the work is split, and
how the pieces come back together.

`torchrun --nproc_per_node N -m bench.cli ...` (or multi-node with torchrun's `--nnodes` and
`--rdzv-endpoint`) sets RANK, WORLD_SIZE, LOCAL_RANK and MASTER_ADDR/PORT in the environment;
`init()` joins the process group from them (NCCL when every rank has a CUDA device, gloo
otherwise, or the backend named in TALKBENCH_DIST_BACKEND). Without those variables talkbench is
one process of a world of one, and every helper here is the identity: `shard` returns all items,
`gather` returns [obj], `barrier` does nothing. Code that splits work therefore has one path for
one process and for many.

Splitting is by position (`items[rank::world]`), so it depends only on the order of the items,
which every caller sorts by a content key or clip id first: each rank computes the same split
without talking to the others.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence, TypeVar

T = TypeVar("T")

ENV_BACKEND = "TALKBENCH_DIST_BACKEND"


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str = "none"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def describe(self) -> dict:
        """What a result's provenance records about the process group."""
        return {"world_size": self.size, "rank": self.rank, "backend": self.backend}


def launched() -> bool:
    """True when a launcher (torchrun) asked for more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init() -> World:
    """Join the process group the launcher describes (idempotent); a world of one without it."""
    if not launched():
        return World()
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = os.environ.get(ENV_BACKEND) or ("nccl" if torch.cuda.is_available() else "gloo")
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
    return world()


def world() -> World:
    """This process's place in the group (a world of one when no group is initialised)."""
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch is a dependency
        return World()
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(rank=dist.get_rank(), size=dist.get_world_size(),
                 local_rank=int(os.environ.get("LOCAL_RANK", "0")), backend=dist.get_backend())


def shard(items: Sequence[T], w: World | None = None) -> list[T]:
    """This rank's share of `items` (every item on exactly one rank)."""
    w = w or world()
    return list(items[w.rank::w.size])


def gather(obj: Any, w: World | None = None) -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank (picklable objects)."""
    w = w or world()
    if not w.distributed:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * w.size
    dist.all_gather_object(out, obj)
    return out


def broadcast(obj: Any, w: World | None = None) -> Any:
    """Rank 0's `obj` on every rank."""
    w = w or world()
    if not w.distributed:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(w: World | None = None) -> None:
    w = w or world()
    if w.distributed:
        import torch.distributed as dist

        dist.barrier()


def shutdown() -> None:
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover
        return
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
