"""Which process this is among those torch.distributed runs, and what they share: read by
the losses that gather every rank's embeddings, the evaluation that splits its samples over
the ranks, and training (`train/distributed.py`, which starts the process group).

In a single process (no group, or a group of one) this is rank 0 of 1 and nothing is
exchanged.
"""

from __future__ import annotations

from typing import TypeVar

import torch.distributed as dist

T = TypeVar("T")


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


def part(size: int) -> range:
    """This rank's contiguous part of `size` items (the parts in rank order are all of them,
    in order; they differ in length by one at most)."""
    return range(size * rank() // world(), size * (rank() + 1) // world())


def everyone(value: T) -> list[T]:
    """Every rank's `value` in rank order (pickled across processes: for this program's own
    tensors and numbers, never for anything read from outside)."""
    if not active():
        return [value]
    values: list[T] = [value] * world()
    dist.all_gather_object(values, value)
    return values
