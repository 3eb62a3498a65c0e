"""Data-parallel training of talkbench's torch methods under torchrun, written once.

`torchrun --nproc_per_node N -m bench.cli run ...` starts N ranks (`core.distributed.init` joins
them: NCCL on GPUs, each rank on `cuda:LOCAL_RANK`, gloo on the CPU). Every rank runs the same
training loop from the same seed: the same initial parameters (`torch.manual_seed(seed)` before
the model is built; DistributedDataParallel also broadcasts rank 0's parameters and buffers when
it wraps the model), the same numpy generator, so the same plan of batches and the same random
windows. What is split is each global batch: rank r makes the batch one process would make and
keeps its contiguous share (`local_part`: shares differ by at most one window, the first ranks
take the extra ones), computes its loss mean on that share, and DistributedDataParallel averages
the ranks' gradients during backward. The rank's loss is multiplied by
(its share / the batch) x world size, so that average is the gradient of the mean over the whole
batch: one process's update, up to the order of float summation (tested with 2 gloo ranks to a
relative 1e-5 on the parameters). The global batch, the epoch, the schedule and the checkpoint's
meaning do not change with the world size. Each rank's forward and backward run on 1/N of the
batch; the batch's data is still made whole on every rank (cheap next to the model for these
methods), so data preparation is not divided.

Where "equal to one process" stops:
- Parameters whose true gradient is zero (attention key biases, which softmax ignores; a conv bias
  just before batch norm) get float noise as gradient, and Adam's normalised step turns noise into
  full-size moves whatever its size: such tensors differ between one process and several ranks
  (measured on KFusion: relative 0.35 on a key bias, median over all tensors 5e-9) without changing
  what the model computes.
- A loss that is not a mean of per-window terms is computed on each share: SPEAR's mouth-box MSE
  (normalised by the mask area of the batch) and TCSAN's weighted Dice term (ratios of sums) differ
  from the whole batch's value; equal in expectation, not in value.
- Batch norm (TCSAN's audio encoder is the only BN in talkbench's methods): on NCCL the layers
  become `SyncBatchNorm`, whose statistics are those of the global batch, so equality holds. gloo
  has no SyncBatchNorm (torch's runs on GPU / XPU tensors only): on the CPU each rank normalises
  with its share's statistics, and DistributedDataParallel broadcasts rank 0's running statistics
  to the others before each forward, so a BN model trained on several CPU ranks differs from one
  process (per-rank statistics of smaller batches).
- Dropout, or any torch random draw inside the loss: every rank draws from the same torch stream,
  so the masks are not the ones one process would draw for those windows (equal in distribution).
- A rank whose share is empty (a batch smaller than the world) runs the batch's first window with
  weight 0: DistributedDataParallel needs every rank's backward, and the zero gradient adds nothing
  (under SyncBatchNorm that window does enter the statistics).

Writes: rank 0 alone writes the training state, log and checkpoint (`TorchMethod.fit` reads the
resume state on rank 0 and broadcasts it; `bench.runner.train_or_load` saves on rank 0 and the
other ranks load that file after a barrier, so every rank ends with rank 0's weights).

The loops that use this: `TorchMethod.fit` (kfusion, spear_a2l, gnerf_a2l, spear's and
spear_no_flow's stage 2 and their stage 1, the TCSAN rows' main training, gnerf's stage 1) and the
TCSAN rows' pre-training of Audio2AU and the AU classifier. Loops that stay single-process (every
rank runs the whole loop from the same seed; rank 0's result is the one kept): the tiny VAE of
spear (`latent_vae.train_autoencoder`), fd2talk's four stages, gnerf's NeRF.

`wrap` puts the model *and its loss function* in DistributedDataParallel, so the loss may call
the model and any of its submodules as it likes (SPEAR's discriminator, TCSAN's AU classifier are
called by the loss, not by the model's forward): every parameter the loss reaches has its gradient
averaged, and `compute_loss` gets the model itself in one process and in many.
"""

from __future__ import annotations

import functools
from typing import Callable, Optional

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from core import distributed
from core.distributed import World

Batch = dict[str, torch.Tensor]


class _Loss(nn.Module):
    """A model and its loss as one module, `forward(batch) -> loss`, so that DistributedDataParallel
    sees every parameter the loss reaches (submodules the loss calls besides the model's forward)."""

    def __init__(self, model: nn.Module, loss_fn: Callable[[nn.Module, Batch], torch.Tensor]) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.loss_fn(self.model, batch)


def training_device(device: str | torch.device, world: Optional[World] = None) -> torch.device:
    """The device this rank trains on: `cuda` (no index) is `cuda:LOCAL_RANK` in a world of several
    ranks; anything else as given."""
    world = world or distributed.world()
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None and world.distributed:
        return torch.device("cuda", world.local_rank)
    return dev


def wrap(model: nn.Module, loss_fn: Callable[[nn.Module, Batch], torch.Tensor],
         world: Optional[World] = None) -> Callable[[Batch], torch.Tensor]:
    """`batch -> loss_fn(model, batch)`: the plain call in a world of one; else the model and its
    loss inside DistributedDataParallel (batch norm layers made SyncBatchNorm first when the group
    is NCCL), whose backward averages the gradients of every parameter the loss reached. Parameters
    the loss leaves without a gradient in a step (KFusion's wav2vec2 mask embedding) are found each
    step (`find_unused_parameters`). The model must be on its device. Rank 0's parameters and
    buffers are broadcast to every rank here (a collective: every rank wraps together); the
    model's train / eval mode stays the model's."""
    world = world or distributed.world()
    if not world.distributed:
        return functools.partial(loss_fn, model)
    device = next(model.parameters()).device
    if world.backend == "nccl":
        nn.SyncBatchNorm.convert_sync_batchnorm(model)  # in place, the same Parameter objects
    return DistributedDataParallel(_Loss(model, loss_fn), device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=True)


def local_part(n: int, world: Optional[World] = None) -> tuple[slice, float]:
    """(this rank's slice of a global batch of `n` items, the weight on its loss mean).

    Shares are contiguous and differ by at most one item (the first `n % size` ranks take one
    more). The weight is share / n x size, so DistributedDataParallel's average of the ranks'
    gradients is the gradient of the mean over all `n`. An empty share is the first item with
    weight 0 (see the module docstring). A world of one: (slice(0, n), 1.0).
    """
    world = world or distributed.world()
    if n <= 0:
        raise ValueError(f"a batch of {n} items cannot be shared among ranks")
    if not world.distributed:
        return slice(0, n), 1.0
    base, extra = divmod(n, world.size)
    start = world.rank * base + min(world.rank, extra)
    count = base + (1 if world.rank < extra else 0)
    if count == 0:
        return slice(0, 1), 0.0
    return slice(start, start + count), count * world.size / n


def take(batch: Batch, part: slice, n: int) -> Batch:
    """Items `part` of a batch whose every tensor holds the `n` items on its first axis (the
    `make_batch` contract); a tensor with another first axis is an error, not silently shared."""
    out = {}
    for key, value in batch.items():
        if not isinstance(value, torch.Tensor) or value.ndim == 0 or value.shape[0] != n:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"batch entry {key!r} ({shape}) does not hold the {n} items on its first "
                             f"axis: it cannot be split among ranks")
        out[key] = value[part]
    return out


def reduce_loss(loss: torch.Tensor, weight: float, world: Optional[World] = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(the loss this rank calls backward on, the global batch's loss value, detached and the same
    on every rank). A world of one: (loss, loss.detach()), nothing changed."""
    world = world or distributed.world()
    if not world.distributed:
        return loss, loss.detach()
    import torch.distributed as dist

    scaled = loss * weight
    value = scaled.detach().clone()
    dist.all_reduce(value)
    return scaled, value / world.size


def batch_loss(replica: Callable[[Batch], torch.Tensor], batch: Batch, n: int,
               world: Optional[World] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss of this rank's share of `batch` (`n` items) through `replica` (what `wrap`
    returned), weighted for DistributedDataParallel, and the whole batch's loss value (see
    `reduce_loss`). A world of one: `replica(batch)` as it is."""
    world = world or distributed.world()
    if not world.distributed:
        return reduce_loss(replica(batch), 1.0, world)
    part, weight = local_part(n, world)
    return reduce_loss(replica(take(batch, part, n)), weight, world)
