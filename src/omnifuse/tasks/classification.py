"""Multi-class classification of a manifest column, decoded by one Perceiver IO query."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from omnifuse.errors import DataError
from omnifuse.heads.query import QueryHead
from omnifuse.interfaces import Batch
from omnifuse.manifest import Manifest
from omnifuse.metrics import accuracy, macro_f1
from omnifuse.modalities.base import is_missing
from omnifuse.registry import register_task
from omnifuse.tasks.base import Task, TaskSpec, TaskView, no_loss


def _label_order(label: str) -> tuple[int, float | str]:
    try:
        return (0, float(label))
    except ValueError:
        return (1, label)


class Classification(Task):
    head: QueryHead

    def __init__(self, *, name: str, dim: int, classes: list[str], weight: float) -> None:
        super().__init__(name=name, weight=weight)
        self.classes = classes
        self.head = QueryHead(dim=dim, out=max(len(self.classes), 1))

    def describe(self, prediction: Tensor) -> dict[str, Any]:
        """The most probable class and every class's probability."""
        probabilities = prediction.softmax(-1).tolist()
        best = max(range(len(probabilities)), key=probabilities.__getitem__)
        return {
            "label": self.classes[best],
            "probabilities": {
                c: round(p, 6) for c, p in zip(self.classes, probabilities, strict=True)
            },
        }

    def forward(self, view: TaskView) -> Tensor:
        return self.decoded(view)[:, 0]  # (B, classes) logits

    def loss(self, prediction: Tensor, batch: Batch) -> Tensor:
        keep = self.labelled(batch)
        if not keep.any():
            return no_loss(prediction)
        return F.cross_entropy(prediction[keep], batch.targets[self.name][keep])

    def metrics(self, prediction: Tensor, target: Tensor) -> dict[str, float]:
        predicted = prediction.argmax(-1)
        return {
            "accuracy": accuracy(predicted, target),
            "macro_f1": macro_f1(predicted, target, len(self.classes)),
        }


@register_task("classification")
class ClassificationSpec(TaskSpec):
    """One label per sample from column `target`; `classes` are fitted when not given."""

    target: str

    def __init__(
        self, name: str, *, target: str, classes: list[str] | None = None, weight: float = 1.0
    ) -> None:
        super().__init__(name, weight=weight)
        self.target = target
        self.classes = classes or []

    def fit(self, manifest: Manifest, rows: Sequence[int]) -> dict[str, Any]:
        cells = [manifest.rows[i].get(self.target) for i in rows]
        labels = {str(cell) for cell in cells if not is_missing(cell)}
        if len(labels) < 2:
            raise DataError(f"column '{self.target}': fewer than 2 classes in the training split")
        return {"classes": sorted(labels, key=_label_order)}

    def target_template(self) -> Tensor:
        return torch.zeros((), dtype=torch.long)

    def load_target(self, row: Mapping[str, Any]) -> Tensor | None:
        value = row.get(self.target)
        if is_missing(value):
            return None
        try:
            return torch.tensor(self.classes.index(str(value)))
        except ValueError:
            raise DataError(
                f"column '{self.target}': label {value!r} is not one of the "
                f"{len(self.classes)} classes of task '{self.name}'"
            ) from None

    def build(self, *, dim: int, modalities: Sequence[str]) -> Classification:
        return Classification(name=self.name, dim=dim, classes=self.classes, weight=self.weight)
