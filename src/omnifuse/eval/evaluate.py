"""Run a model over samples and compute every task's metrics."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

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
) -> dict[str, Predictions]:
    """Every task's predictions and targets over `samples`, read by `workers` processes."""
    model.eval()
    parts: dict[str, list[tuple[Tensor, Tensor]]] = {name: [] for name in model.tasks}
    chunks = [
        range(i, min(i + batch_size, len(samples))) for i in range(0, len(samples), batch_size)
    ]
    for batch in batches(samples, chunks, collate, workers=workers):
        output = model(batch)
        for name, task in model.task_dict().items():
            keep = task.labelled(batch)
            target = task.evaluation_target(batch)
            parts[name].append((output.outputs[name][keep], target[keep]))
    return {
        name: Predictions(_cat([p for p, _ in chunks]), _cat([t for _, t in chunks]))
        for name, chunks in parts.items()
    }


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
) -> dict[str, dict[str, float]]:
    """{task: {metric: value}} over `samples`."""
    predictions = predict(model, samples, collate, batch_size=batch_size, workers=workers)
    tasks = model.task_dict()
    return {name: tasks[name].metrics(p.prediction, p.target) for name, p in predictions.items()}
