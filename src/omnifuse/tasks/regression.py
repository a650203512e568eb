"""Regression of a numeric column, trained on the standardised value."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from omnifuse.errors import DataError
from omnifuse.heads.query import QueryHead
from omnifuse.interfaces import Batch
from omnifuse.manifest import Manifest
from omnifuse.registry import register_task
from omnifuse.tasks.base import Task, TaskSpec, TaskView, missing_label, no_loss

# a decimal number as CSV writes one: no underscores, no words (float() takes "1_0", "nan")
NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


class Regression(Task):
    head: QueryHead
    per_modality = True

    def __init__(self, *, name: str, dim: int, mean: float, std: float, weight: float) -> None:
        super().__init__(name=name, weight=weight)
        self.mean, self.std = mean, std
        self.head = QueryHead(dim=dim, out=1)

    def describe(self, prediction: Tensor) -> float:
        return round(float(prediction), 6)

    def forward(self, view: TaskView) -> Tensor:
        return self.decoded(view)[:, 0, 0] * self.std + self.mean  # (B,) in the target's units

    def loss(self, prediction: Tensor, batch: Batch) -> Tensor:
        keep = self.labelled(batch)
        if not keep.any():
            return no_loss(prediction)
        error = (prediction[keep] - batch.targets[self.name][keep]) / self.std
        return F.mse_loss(error, torch.zeros_like(error))

    def metrics(self, prediction: Tensor, target: Tensor) -> dict[str, float]:
        error = prediction - target
        return {"mse": error.pow(2).mean().item(), "mae": error.abs().mean().item()}


@register_task("regression")
class RegressionSpec(TaskSpec):
    """A number per sample from column `target` (a number, or text that writes one in
    decimal); `mean` and `std` are fitted when not given."""

    target: str

    def __init__(
        self,
        name: str,
        *,
        target: str,
        mean: float | None = None,
        std: float | None = None,
        weight: float = 1.0,
    ) -> None:
        super().__init__(name, weight=weight)
        self.target = target
        self.mean = 0.0 if mean is None else mean
        self.std = 1.0 if std is None else std

    def value(self, row: Mapping[str, Any]) -> float | None:
        """The row's target, or None when its cell is empty (or only whitespace)."""
        value = row.get(self.target)
        if missing_label(value):
            return None
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float | str)
            or (isinstance(value, str) and not NUMBER.fullmatch(value.strip()))
        ):
            raise DataError(f"column '{self.target}': not a number: {value!r}")
        try:
            number = float(value)
        except OverflowError:  # an integer beyond floats
            number = math.inf
        if not math.isfinite(number):
            raise DataError(f"column '{self.target}': not a finite number: {value!r}")
        return number

    def fit(self, manifest: Manifest, rows: Sequence[int]) -> dict[str, Any]:
        cells = manifest.readable(rows, self.value)
        values = torch.tensor([v for v in cells if v is not None])
        if len(values) < 2:
            raise DataError(f"column '{self.target}': fewer than 2 values in the training split")
        return {"mean": values.mean().item(), "std": max(values.std().item(), 1e-6)}

    def load_target(self, row: Mapping[str, Any]) -> Tensor | None:
        value = self.value(row)
        return None if value is None else torch.tensor(value, dtype=torch.float32)

    def build(self, *, dim: int, modalities: Sequence[str]) -> Regression:
        return Regression(name=self.name, dim=dim, mean=self.mean, std=self.std, weight=self.weight)
