"""A task is a head, its loss and its metrics; the model holds one or more."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from omnifuse.data.batch import Batch
from omnifuse.data.manifest import Manifest
from omnifuse.heads.query import QueryHead


class Task(nn.Module):
    """Base of all tasks. `target` names the manifest column it learns from (None for none).

    A task that reads the fused tokens has a `head`: its learned output queries, which the
    model's shared Perceiver IO decoder reads out, and its output layer. A task without one
    (alignment) reads only the per-modality embeddings.
    """

    target: str | None = None
    head: QueryHead | None

    def __init__(self, *, name: str, weight: float) -> None:
        super().__init__()
        self.name = name
        self.weight = weight
        self.head = None  # tasks that read the fused tokens set their QueryHead

    def fit(self, manifest: Manifest, rows: Sequence[int]) -> dict[str, Any]:
        """Options fitted on the training rows (class lists, statistics); stored in the config."""
        return {}

    def load_target(self, row: Mapping[str, Any]) -> Tensor | None:
        """The target for one row, or None when the row has no label for this task."""
        return None

    def target_template(self) -> Tensor:
        """A placeholder target (shape and dtype) for samples without a label."""
        return torch.zeros(())

    def describe(self, prediction: Tensor) -> Any:
        """One sample's prediction as JSON-able output, or None for tasks that predict no
        target (alignment: see `omnifuse embed`)."""
        return None

    def labelled(self, batch: Batch) -> Tensor:
        """(B,) which samples of the batch count for this task's loss and metrics."""
        return batch.labelled[self.name]

    def forward(self, decoded: Tensor | None, embeddings: dict[str, Tensor]) -> Tensor:
        """The prediction from `decoded` (B, Q, D), this task's queries as read by the
        decoder (None for a task without a head), and the per-modality embeddings."""
        raise NotImplementedError

    def loss(self, prediction: Tensor, batch: Batch) -> Tensor:
        raise NotImplementedError

    def metrics(self, prediction: Tensor, target: Tensor) -> dict[str, float]:
        """Metrics over a whole evaluation set of labelled samples."""
        raise NotImplementedError


def no_loss(prediction: Tensor) -> Tensor:
    """A zero that keeps the graph connected, for a batch in which no sample counts."""
    return prediction.sum() * 0.0
