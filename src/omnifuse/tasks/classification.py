"""Multi-class classification of a manifest column, decoded by one Perceiver IO query.

A label is compared as text, made by one rule (`label_text`) wherever labels are read:
fitting the class list, loading targets, classes given in the config. CSV gives every cell
as text while JSON Lines and Parquet give numbers as numbers, so the rule makes 1, 1.0, "1"
and "1.0" one class.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from omnifuse.errors import ConfigError, DataError
from omnifuse.heads.query import QueryHead
from omnifuse.interfaces import Batch
from omnifuse.manifest import Manifest
from omnifuse.metrics import accuracy, macro_f1
from omnifuse.registry import register_task
from omnifuse.tasks.base import Task, TaskSpec, TaskView, missing_label, no_loss

WHOLE = re.compile(r"([+-]?\d+)\.0+")  # "1.0": how pandas writes 1 in a column with gaps


def label_text(value: Any) -> str | None:
    """The label a cell holds, as text; None for a missing one (empty or only whitespace).

    Text is stripped of surrounding whitespace; a whole number is written as an integer (1,
    1.0, "1" and "1.0" are all "1"), any other number as Python writes it ("0.5"), a boolean
    as True or False (as pandas writes it to CSV). A list or an object is no label.

    >>> [label_text(v) for v in (1, 1.0, " 1.0 ", "cat ", True, 0.5, " ")]
    ['1', '1', '1', 'cat', 'True', '0.5', None]
    """
    if missing_label(value):
        return None
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list | tuple | dict | bytes):
        raise DataError(f"expected a label (text or a number), got {type(value).__name__}")
    text = str(value).strip()
    whole = WHOLE.fullmatch(text)
    return str(int(whole[1])) if whole else text


def _label_order(label: str) -> tuple[int, float | str]:
    try:
        return (0, float(label))
    except ValueError:
        return (1, label)


class Classification(Task):
    head: QueryHead
    per_modality = True

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
    """One label per sample from column `target`, read by `label_text`; `classes` are fitted
    when not given (and given ones are read by the same rule)."""

    target: str

    def __init__(
        self, name: str, *, target: str, classes: list[str] | None = None, weight: float = 1.0
    ) -> None:
        super().__init__(name, weight=weight)
        self.target = target
        self.classes: list[str] = []
        for given in classes or []:
            try:
                label = label_text(given)
            except DataError as error:
                raise ConfigError(f"model.tasks.{name}.classes: {error}") from None
            if label is None or label in self.classes:
                why = "an empty class" if label is None else f"class '{label}' appears twice"
                raise ConfigError(f"model.tasks.{name}.classes: {why} (given {given!r})")
            self.classes.append(label)
        self.index = {label: i for i, label in enumerate(self.classes)}

    def label(self, row: Mapping[str, Any]) -> str | None:
        """The row's label (`label_text`), or None when it has none."""
        try:
            return label_text(row.get(self.target))
        except DataError as error:
            raise DataError(f"column '{self.target}': {error}") from None

    def fit(self, manifest: Manifest, rows: Sequence[int]) -> dict[str, Any]:
        labels = {label for label in manifest.readable(rows, self.label) if label is not None}
        if len(labels) < 2:
            raise DataError(f"column '{self.target}': fewer than 2 classes in the training split")
        return {"classes": sorted(labels, key=_label_order)}

    def target_template(self) -> Tensor:
        return torch.zeros((), dtype=torch.long)

    def load_target(self, row: Mapping[str, Any]) -> Tensor | None:
        label = self.label(row)
        if label is None:
            return None
        if label not in self.index:
            raise DataError(
                f"column '{self.target}': label {row.get(self.target)!r} is not one of the "
                f"{len(self.classes)} classes of task '{self.name}'"
            )
        return torch.tensor(self.index[label])

    def build(self, *, dim: int, modalities: Sequence[str]) -> Classification:
        return Classification(name=self.name, dim=dim, classes=self.classes, weight=self.weight)
