"""A task is a head, its loss and its metrics; the model holds one or more."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from omnifuse.data.batch import Batch
from omnifuse.data.manifest import Manifest
from omnifuse.fusion.base import Fused
from omnifuse.heads.query import QueryHead
from omnifuse.heads.text_decoder import NextLogits


@dataclass
class TaskInput:
    """What a task reads to predict.

    decoded: (B, Q, D) the task's queries as read from `fused` by the shared decoder (None for
        a task without a head).
    fused: the fused tokens the prediction is made from (for late fusion, one modality's part).
    embeddings: modality -> (B, D) pooled encoder tokens of what the model saw (zero where the
        modality was absent or hidden).
    targets: modality -> (B, D) pooled tokens of every modality the sample has, before modality
        dropout and hiding, without gradient (from the modality's EMA teacher encoder when the
        model keeps one): reconstruction targets.
    batch: the batch itself (targets for teacher forcing, raw inputs).
    """

    decoded: Tensor | None
    fused: Fused
    embeddings: dict[str, Tensor]
    targets: dict[str, Tensor]
    batch: Batch


class Task(nn.Module):
    """Base of all tasks. `target` names the manifest column it learns from (None for none).

    A task that reads the fused tokens has a `head`: its learned output queries, which the
    model's shared Perceiver IO decoder reads out, and its output layer. A task without one
    (alignment) reads only the per-modality embeddings.
    """

    target: str | None = None
    head: QueryHead | None
    # a modality hidden from every sample when this task is decoded (reconstruction predicts
    # it from the others): the model fuses the other modalities once more for such tasks
    hides: str | None = None
    # the fraction of that modality's tokens hidden in training (masked modelling); evaluation
    # always hides them all
    hide_ratio: float = 1.0
    # an EMA momentum for the teacher encoder of `hides` that gives `TaskInput.targets`
    teacher_momentum: float | None = None
    # True for autoregressive tasks: in evaluation the model calls `generate` instead of forward
    generates: bool = False

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

    def evaluation_target(self, batch: Batch) -> Tensor:
        """(B, ...) what `metrics` compares predictions with: the batch's targets, or zeros
        for a task without a target column."""
        return batch.targets.get(self.name, torch.zeros(len(batch)))

    def forward(self, x: TaskInput) -> Tensor:
        """The prediction for a batch (for an autoregressive task, teacher-forced logits)."""
        raise NotImplementedError

    def step(self, fused: Fused, prefix: Tensor) -> Tensor:
        """Autoregressive tasks: next-token logits (B, V) after `prefix` (B, T), reading `fused`
        (B samples)."""
        raise NotImplementedError

    def generate(self, next_logits: NextLogits, size: int) -> Tensor:
        """Autoregressive tasks: the generated output for `size` samples, from `next_logits`
        (which averages over a late fusion's parts, like every other prediction)."""
        raise NotImplementedError

    def loss(self, prediction: Tensor, batch: Batch) -> Tensor:
        raise NotImplementedError

    def metrics(self, prediction: Tensor, target: Tensor) -> dict[str, float]:
        """Metrics over a whole evaluation set of labelled samples."""
        raise NotImplementedError


def no_loss(prediction: Tensor) -> Tensor:
    """A zero that keeps the graph connected, for a batch in which no sample counts."""
    return prediction.sum() * 0.0
