"""A task is a head, its loss and its metrics; the model holds one or more."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from omnifuse.data.batch import Batch
from omnifuse.data.manifest import Manifest
from omnifuse.fusion.base import Fused


class Task(nn.Module):
    """Base of all tasks. `target` names the manifest column it learns from (None for none)."""

    target: str | None = None

    def __init__(self, *, name: str, weight: float) -> None:
        super().__init__()
        self.name = name
        self.weight = weight

    def fit(self, manifest: Manifest, rows: Sequence[int]) -> dict[str, Any]:
        """Options fitted on the training rows (class lists, statistics); stored in the config."""
        return {}

    def load_target(self, row: Mapping[str, Any]) -> Tensor | None:
        """The target for one row, or None when the row has no label for this task."""
        return None

    def labelled(self, batch: Batch) -> Tensor:
        """(B,) which samples of the batch count for this task's loss and metrics."""
        return batch.labelled[self.name]

    def forward(self, fused: Fused, embeddings: dict[str, Tensor]) -> Tensor:
        raise NotImplementedError

    def loss(self, prediction: Tensor, batch: Batch) -> Tensor:
        raise NotImplementedError

    def metrics(self, prediction: Tensor, target: Tensor) -> dict[str, float]:
        """Metrics over a whole evaluation set of labelled samples."""
        raise NotImplementedError


def no_loss(prediction: Tensor) -> Tensor:
    """A zero that keeps the graph connected, for a batch in which no sample counts."""
    return prediction.sum() * 0.0
