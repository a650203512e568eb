"""Training on many processes with PyTorch's own engine: the process group that `torchrun`
describes in the environment, DistributedDataParallel around the model, each rank's share of
every batch, and rank 0's say over everything written.

    torchrun --nproc-per-node 2 -m omnifuse train CONFIG --out DIR

Each rank reads its own rows of each global batch (`train.batch_size` over all ranks); DDP
averages the gradients, which for losses that are means over equal shares (and for the
alignment losses, which gather every rank's embeddings and scale by the world size) is the
gradient of the global batch. Every rank holds the same weights, optimizer state and random
generators, so rank 0's checkpoint resumes them all.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from omnifuse.errors import ConfigError
from omnifuse.interfaces import Batch
from omnifuse.model import OmnifuseModel


def active() -> bool:
    """True when this process is one of several in an initialised process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world() -> int:
    return dist.get_world_size() if active() else 1


def main() -> bool:
    """True on the process that logs, checkpoints and writes reports (rank 0)."""
    return rank() == 0


@contextmanager
def session() -> Iterator[None]:
    """The process group `torchrun` sets up in the environment (WORLD_SIZE > 1): gloo on
    CPU, NCCL when CUDA is there; nothing in a single process, or when a group exists."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or (
        dist.is_available() and dist.is_initialized()
    ):
        yield
        return
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend, timeout=timedelta(minutes=30))
    try:
        yield
    finally:
        dist.destroy_process_group()


def share(chunk: Sequence[int], batch_size: int) -> Sequence[int]:
    """This rank's rows of a global batch: every world-th one, from its rank."""
    if batch_size % world():
        raise ConfigError(
            f"train.batch_size: {batch_size} is not a multiple of the {world()} processes; "
            "each must get an equal share of every batch"
        )
    return chunk[rank() :: world()]


def barrier() -> None:
    if active():
        dist.barrier()


def mean(values: dict[str, Tensor]) -> dict[str, Tensor]:
    """Each scalar averaged over the ranks (the logged losses of the global batch)."""
    if not active():
        return values
    names = sorted(values)
    stacked = torch.stack([values[n].detach().float() for n in names])
    dist.all_reduce(stacked)
    return dict(zip(names, (stacked / world()).unbind(), strict=True))


class TrainingStep(nn.Module):
    """The model's `training_forward` as a forward, which DistributedDataParallel hooks."""

    def __init__(self, model: OmnifuseModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        return self.model.training_forward(batch)


def engine(model: OmnifuseModel) -> nn.Module:
    """What computes a training step's losses: the model's own step, or under
    torch.distributed its DDP wrapper, whose backward averages the gradients over ranks."""
    step = TrainingStep(model)
    if not active():
        return step
    # a batch can leave parts without a gradient (a decoder no task reads, a hidden modality)
    return DistributedDataParallel(step, find_unused_parameters=True)
