"""Run a model over samples and compute every task's metrics."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from omnifuse import ranks
from omnifuse.data.dataset import batches
from omnifuse.interfaces import Collate, Sample
from omnifuse.model import OmnifuseModel


@dataclass
class Predictions:
    """A task's predictions and targets over the samples that count for it."""

    prediction: Tensor
    target: Tensor


@torch.no_grad()
def predict(
    model: OmnifuseModel,
    samples: Sequence[Sample],
    collate: Collate,
    *,
    batch_size: int = 256,
    workers: int = 0,
    across_ranks: bool = False,
) -> dict[str, Predictions]:
    """Every task's predictions and targets over `samples`, read by `workers` processes.

    With `across_ranks` every rank of torch.distributed calls this: each predicts its own
    part of `samples`, and each receives all parts, in the order of `samples`, so that the
    metrics computed from them are those of one process predicting everything."""
    model.eval()
    parts: dict[str, list[tuple[Tensor, Tensor]]] = {name: [] for name in model.tasks}
    chunks = _chunks(len(samples), batch_size, across_ranks)
    read = [chunk or range(1) for chunk in chunks]  # an empty chunk runs on a stand-in sample
    loaded = batches(samples, read, collate, workers=workers, pin=model.device.type == "cuda")
    for chunk, batch in zip(chunks, loaded, strict=True):
        output = model(batch)
        if not chunk:
            continue
        for name, task in model.task_dict().items():
            keep = task.labelled(batch)
            target = task.evaluation_target(batch)
            parts[name].append((output.outputs[name].cpu()[keep], target[keep].cpu()))
    if across_ranks:
        every = ranks.everyone(parts)
        parts = {name: [chunk for one in every for chunk in one[name]] for name in parts}
    return {
        name: Predictions(_cat([p for p, _ in chunks]), _cat([t for _, t in chunks]))
        for name, chunks in parts.items()
    }


def _chunks(size: int, batch_size: int, across_ranks: bool) -> list[range]:
    """The batches of sample indices to predict: all of them in batches of `batch_size`, or
    (`across_ranks`) this rank's part, in as many batches as every other rank's, some
    perhaps empty: a model sharded by FSDP gathers its weights in every forward, which each
    rank must run alike."""
    if not across_ranks or not size:
        return [range(i, min(i + batch_size, size)) for i in range(0, size, batch_size)]
    mine = ranks.part(size)
    largest = math.ceil(size / ranks.world())  # the parts differ by one sample at most
    count = math.ceil(largest / batch_size)
    return [mine[len(mine) * k // count : len(mine) * (k + 1) // count] for k in range(count)]


def _cat(chunks: list[Tensor]) -> Tensor:
    """Batches' tensors concatenated, zero-padding the last axis where batches differ on it
    (token sequences)."""
    if chunks[0].ndim >= 2:
        width = max(c.shape[-1] for c in chunks)
        chunks = [F.pad(c, (0, width - c.shape[-1])) for c in chunks]
    return torch.cat(chunks)


def evaluate(
    model: OmnifuseModel,
    samples: Sequence[Sample],
    collate: Collate,
    *,
    batch_size: int = 256,
    workers: int = 0,
    across_ranks: bool = False,
) -> dict[str, dict[str, float]]:
    """{task: {metric: value}} over `samples` (split over the ranks with `across_ranks`)."""
    predictions = predict(
        model, samples, collate, batch_size=batch_size, workers=workers, across_ranks=across_ranks
    )
    tasks = model.task_dict()
    return {name: tasks[name].metrics(p.prediction, p.target) for name, p in predictions.items()}
