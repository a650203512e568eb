"""Training on many processes with PyTorch's own engine: the process group that `torchrun`
describes in the environment, DistributedDataParallel (or FSDP2's `fully_shard`) around the
model, each rank's share of every batch, and rank 0's say over everything written.

    torchrun --nproc-per-node 2 -m omnifuse train CONFIG --out DIR

Each rank reads its own rows of each global batch (`train.batch_size` over all ranks); DDP
averages the gradients, which for losses that are means over equal shares (and for the
alignment losses, which gather every rank's embeddings and scale by the world size) is the
gradient of the global batch. Every rank holds the same weights, optimizer state and random
generators, so rank 0's checkpoint resumes them all. With `train.strategy: fsdp` each
encoder's weights and optimizer state are split over the ranks instead; the checkpoint
gathers them whole, so it is the same file either way.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.nn.parallel import DistributedDataParallel

from omnifuse import ranks
from omnifuse.errors import ConfigError
from omnifuse.interfaces import Batch
from omnifuse.model import OmnifuseModel


def device(choice: str = "auto") -> torch.device:
    """The device `train.device` names for this process, made current: auto is CUDA when
    torch sees a GPU, else MPS, else the CPU. Under torchrun each process of a machine takes
    the GPU of its LOCAL_RANK."""
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "mps" if _mps() else "cpu"
    if choice == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"train.device: cuda, but this torch ({torch.__version__}) sees no CUDA GPU; "
                "use auto or cpu"
            )
        if local >= torch.cuda.device_count():
            raise ConfigError(
                f"train.device: cuda for process {local} of this machine, but torch sees "
                f"{torch.cuda.device_count()} GPUs; start at most that many (--nproc-per-node)"
            )
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    if choice == "mps":
        if not _mps():
            raise ConfigError("train.device: mps, but torch sees no Apple GPU; use auto or cpu")
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ConfigError("train.device: mps trains in one process; use cpu under torchrun")
        return torch.device("mps")
    return torch.device("cpu")


def _mps() -> bool:
    return torch.backends.mps.is_available()


@contextmanager
def session(choice: str = "auto") -> Iterator[None]:
    """The process group `torchrun` sets up in the environment (WORLD_SIZE > 1), on NCCL
    when `choice` (train.device) trains on CUDA, else on gloo; nothing in a single process,
    or when a group exists."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or (
        dist.is_available() and dist.is_initialized()
    ):
        yield
        return
    backend = "nccl" if device(choice).type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=timedelta(minutes=30))
    try:
        yield
    finally:
        dist.destroy_process_group()


def share_cores(threads: int | None, workers: int) -> int:
    """Set and return torch's intra-op threads for this process: `threads` (train.threads)
    when given; else torch's own choice when OMP_NUM_THREADS is set; else the cores this
    process may run on, less one per data worker and one left for everything else (the loop,
    the system, another program), shared among this machine's processes (torchrun's
    LOCAL_WORLD_SIZE), at least 1. Threads that outnumber the free cores wait on each other:
    with another process busy on one of 2 cores, 2 threads trained 3.7x slower than 1
    (docs/benchmarks.md)."""
    if threads is None and os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    if threads is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        threads = max(1, ((cores or os.cpu_count() or 1) - workers - 1) // local)
    torch.set_num_threads(threads)
    return threads


def share(chunk: Sequence[int], batch_size: int) -> Sequence[int]:
    """This rank's rows of a global batch: every world-th one, from its rank."""
    if batch_size % ranks.world():
        raise ConfigError(
            f"train.batch_size: {batch_size} is not a multiple of the {ranks.world()} processes; "
            "each must get an equal share of every batch"
        )
    return chunk[ranks.rank() :: ranks.world()]


def mean(values: dict[str, Tensor]) -> dict[str, Tensor]:
    """Each scalar averaged over the ranks (the logged losses of the global batch)."""
    if not ranks.active():
        return values
    names = sorted(values)
    stacked = torch.stack([values[n].detach().float() for n in names])
    dist.all_reduce(stacked)
    return dict(zip(names, (stacked / ranks.world()).unbind(), strict=True))


class TrainingStep(nn.Module):
    """The model's `training_forward` as a forward, which DistributedDataParallel hooks."""

    def __init__(self, model: OmnifuseModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        return self.model.training_forward(batch)


def engine(model: OmnifuseModel, strategy: str = "ddp") -> nn.Module:
    """What computes a training step's losses: the model's own step, or under
    torch.distributed its DDP wrapper, whose backward averages the gradients over ranks, or
    (`fsdp`) the step of the model sharded in place. Call it before making the optimizer:
    sharding replaces the parameters."""
    step = TrainingStep(model)
    if not ranks.active():
        return step
    if strategy == "fsdp":
        shard(model)
        return step
    gpu = [model.device.index] if model.device.type == "cuda" else None
    # a batch can leave parts without a gradient (a decoder no task reads, a hidden modality)
    return DistributedDataParallel(step, device_ids=gpu, find_unused_parameters=True)


def shard(model: OmnifuseModel) -> None:
    """FSDP2 over all ranks: each encoder one unit (its weights gathered for its forward and
    backward, then freed), the rest (fusion, decoder, tasks, whose losses read their weights
    after the forward) the root unit. FSDP cannot split a scalar (a logit scale, a task's
    log-variance): those stay whole on every rank, their gradients averaged as DDP would."""
    mesh = init_device_mesh(model.device.type, (ranks.world(),))
    scalars = {p for p in model.parameters() if p.ndim == 0}
    for encoder in model.encoders.values():
        fully_shard(encoder, mesh=mesh, ignored_params=scalars)
    fully_shard(model, mesh=mesh, ignored_params=scalars)
    for scalar in scalars:
        if scalar.requires_grad:
            scalar.register_post_accumulate_grad_hook(_average_gradient)


def _average_gradient(parameter: Tensor) -> None:
    assert parameter.grad is not None
    dist.all_reduce(parameter.grad)
    parameter.grad /= ranks.world()


def sharded(model: nn.Module) -> bool:
    return isinstance(model, FSDPModule)


def whole(model: OmnifuseModel) -> OmnifuseModel:
    """The model with all its weights in one process: itself, unless FSDP sharded it; then
    (every rank taking part in gathering the weights) a plain copy on rank 0, for what rank 0
    does alone (saving, figures, reports)."""
    if not sharded(model):
        return model
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    weights = get_model_state_dict(model, options=options)
    if not ranks.main():
        return model
    copy = OmnifuseModel.build(model.config)
    copy.load_state_dict(weights)
    return copy
