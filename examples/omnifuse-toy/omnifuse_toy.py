"""An omnifuse plugin in one file: the `numbers` modality kind (a cell holds numbers separated
by spaces, "0.5 2 -1"), its encoder, a fusion and a task, each registered by a decorator.

Installed with its entry point (`[project.entry-points."omnifuse.plugins"] toy =
"omnifuse_toy"`), omnifuse imports it the first time a registry is read, and a config can name
its parts like the built-ins:

    modalities:
      reading: {kind: numbers, max_length: 8}
    model:
      fusion: {type: mean}
      tasks:
        total: {type: total, target: total}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from omnifuse.config import Component, ModalityConfig
from omnifuse.errors import DataError
from omnifuse.heads.query import QueryHead
from omnifuse.interfaces import Batch, Fused, Tokens
from omnifuse.layers.attention import masked_mean
from omnifuse.modalities.base import Modality, is_missing
from omnifuse.modalities.perturbations import Perturbation, gaussian_noise
from omnifuse.registry import (
    create_encoder,
    register_encoder,
    register_fusion,
    register_kind,
    register_task,
)
from omnifuse.tasks.base import Task, TaskSpec, TaskView, no_loss

# ---------------------------------------------------------------------------- a kind


class NumbersConfig(ModalityConfig):
    """Numbers separated by spaces, at most `max_length` of them (more are an error)."""

    kind: Literal["numbers"] = "numbers"
    column: str | None = None
    max_length: int = Field(16, ge=1)
    encoder: Component = Component(type="numbers_embed")


@register_kind("numbers", config=NumbersConfig)
class NumbersModality(Modality[NumbersConfig]):
    def load_value(self, value: Any, root: Path) -> Tensor:
        try:
            numbers = [float(part) for part in str(value).split()]
        except ValueError:
            raise DataError(f"column '{self.column}': not numbers: {value!r:.40}") from None
        if not numbers or len(numbers) > self.config.max_length:
            raise DataError(
                f"column '{self.column}': {len(numbers)} numbers, expected 1 to "
                f"{self.config.max_length}"
            )
        return torch.tensor(numbers)

    def template(self) -> Tensor:
        return torch.zeros(1)

    def perturbations(self) -> dict[str, Perturbation]:
        return {"noise": gaussian_noise}

    def build_encoder(self, dim: int) -> nn.Module:
        encoder = self.config.encoder
        return create_encoder(
            encoder.type, dim=dim, max_length=self.config.max_length, **encoder.options
        )


class NumbersEmbedding(nn.Module):
    """One token per number: its value times a learned direction, plus a learned position."""

    def __init__(self, *, dim: int, max_length: int) -> None:
        super().__init__()
        self.value = nn.Linear(1, dim)
        self.position = nn.Parameter(torch.randn(max_length, dim) * 0.02)

    def forward(self, x: Tensor, lengths: Tensor) -> Tokens:
        tokens = self.value(x[..., None]) + self.position[: x.shape[1]]  # (B, N, D)
        mask = torch.arange(x.shape[1], device=x.device) < lengths[:, None]
        return Tokens(tokens, mask)


@register_encoder("numbers_embed", kinds=("numbers",))
def numbers_embed(dim: int, max_length: int) -> NumbersEmbedding:
    return NumbersEmbedding(dim=dim, max_length=max_length)


# ---------------------------------------------------------------------------- a fusion


class MeanFusion(nn.Module):
    """The mean of each present modality's mean token: a vector, as one token."""

    def __init__(self, *, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, inputs: dict[str, Tokens]) -> Fused:
        pooled = [masked_mean(t.tokens, t.mask) for _, t in sorted(inputs.items())]
        present = [t.mask.any(1, keepdim=True).float() for _, t in sorted(inputs.items())]
        mean = self.norm(sum(pooled) / torch.stack(present).sum(0).clamp(min=1))  # (B, D)
        mask = torch.ones(mean.shape[0], 1, dtype=torch.bool, device=mean.device)
        return Fused(mean[:, None], mask, mean)


@register_fusion("mean")
def mean(dim: int, modalities: Sequence[str]) -> MeanFusion:
    return MeanFusion(dim=dim)


# ---------------------------------------------------------------------------- a task


class Total(Task):
    def __init__(self, *, name: str, dim: int, weight: float) -> None:
        super().__init__(name=name, weight=weight)
        self.head = QueryHead(dim=dim, out=1)

    def forward(self, view: TaskView) -> Tensor:
        return self.decoded(view)[:, 0, 0]  # (B,)

    def describe(self, prediction: Tensor) -> float:
        return round(float(prediction), 4)

    def loss(self, prediction: Tensor, batch: Batch) -> Tensor:
        keep = self.labelled(batch)
        if not keep.any():
            return no_loss(prediction)
        return F.mse_loss(prediction[keep], batch.targets[self.name][keep])

    def metrics(self, prediction: Tensor, target: Tensor) -> dict[str, float]:
        return {"mae": (prediction - target).abs().mean().item()}


@register_task("total")
class TotalSpec(TaskSpec):
    """A number per sample from column `target`, fitted with a squared error."""

    def __init__(self, name: str, *, target: str, weight: float = 1.0) -> None:
        super().__init__(name, weight=weight)
        self.target = target

    def load_target(self, row: Mapping[str, Any]) -> Tensor | None:
        value = row.get(self.target)
        if is_missing(value):
            return None
        try:
            return torch.tensor(float(value))
        except (TypeError, ValueError):
            raise DataError(f"column '{self.target}': not a number: {value!r}") from None

    def build(self, *, dim: int, modalities: Sequence[str]) -> Total:
        return Total(name=self.name, dim=dim, weight=self.weight)
