"""DistributedDataParallel plumbing: one training process per GPU (or CPU slot), via torchrun.

``torchrun --nproc-per-node N $(which bids_infantseg) BIDS OUT train ...`` starts N copies of
the command with ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` set; this module joins them into
a process group (NCCL on GPUs, gloo on CPUs). Without those variables everything here is a
no-op for one process, so the same code trains on a laptop and on a node of GPUs.

Division of work: each rank caches and evaluates its share of the volumes and trains on its
share of every epoch's slices (DDP averages the gradients); rank 0 alone writes checkpoints
and outputs, and every rank waits at a barrier before reading them.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

LOGGER = logging.getLogger("bids_infantseg.train")

TIMEOUT = timedelta(hours=3)
"""Long enough for rank 0 to evaluate or write while the others wait at a barrier."""


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def from_environment() -> Dist:
    """The process's place in a torchrun job (rank 0 of 1 when not started by torchrun)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return Dist(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def init(place: Dist, device: torch.device) -> None:
    """Join the process group (no-op for one process)."""
    if not place.enabled or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=TIMEOUT)
    LOGGER.info("rank %d of %d joined the %s process group", place.rank, place.world, backend)


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks, in place (CPU tensors are moved for NCCL and back)."""
    if not (dist.is_available() and dist.is_initialized()):
        return tensor
    if dist.get_backend() == "nccl" and tensor.device.type != "cuda":
        moved = tensor.cuda()
        dist.all_reduce(moved)
        tensor.copy_(moved.cpu())
    else:
        dist.all_reduce(tensor)
    return tensor


def broadcast_state(module: torch.nn.Module) -> None:
    """Give every rank rank 0's parameters and buffers (e.g. after rank 0 loaded them)."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    for tensor in module.state_dict().values():
        dist.broadcast(tensor, 0)


def rank_spread(module: torch.nn.Module) -> float:
    """Largest difference between ranks of any parameter's sum (0 for one process): DDP keeps
    every rank's parameters identical, and this checks it. (Batch-norm running statistics
    are buffers: DDP gives every rank rank 0's at each forward pass, after which each rank's
    own batch moves them; the model written is rank 0's.)"""
    if not (dist.is_available() and dist.is_initialized()):
        return 0.0
    sums = torch.stack([t.detach().double().sum().cpu() for t in module.parameters()])
    high, low = sums.clone(), sums.clone()
    if dist.get_backend() == "nccl":
        high, low = high.cuda(), low.cuda()
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    return float((high - low).abs().max())


def wrap(net: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``net`` in DistributedDataParallel when there are several ranks, else itself.

    Wrap again whenever the set of trainable parameters changes (stage I to stage II): DDP
    registers its gradient hooks for the parameters that require gradients when it is built.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return net
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(net, device_ids=ids)
