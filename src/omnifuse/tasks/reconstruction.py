"""Reconstruction: predict a modality's pooled embedding from the other modalities.

The model hides `modality` from every sample and fuses the rest once more for this task
(`TaskView.hiding`), or in training, with `mask_ratio` < 1, hides only that fraction of its tokens
(masked modelling, so the fusion must also carry what the modality shows of itself). One
Perceiver IO query reads that fusion and predicts the embedding the modality's own encoder
gives the sample (its masked mean of tokens, without gradient), or, with `teacher_momentum`,
the embedding of an EMA copy of that encoder (data2vec/BYOL-style targets). The loss is one
minus their cosine similarity, over samples that have the modality.

Used three ways: as a self-supervised objective (next to alignment, whose contrastive loss
keeps the encoders from collapsing to a constant that would be trivially predictable); to
impute a missing modality at inference (`describe` gives the predicted embedding); and to
measure how much the other modalities know about this one (`metrics`: cosine similarity, and
how often the imputed embedding retrieves the sample's own true one among all samples).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from omnifuse.errors import ConfigError
from omnifuse.heads.query import QueryHead
from omnifuse.interfaces import Batch
from omnifuse.layers.attention import masked_mean
from omnifuse.metrics import recall_at_k, retrieval_ranks
from omnifuse.registry import register_task
from omnifuse.tasks.base import Task, TaskSpec, TaskView, hide, no_loss


class Reconstruction(Task):
    head: QueryHead

    def __init__(
        self,
        *,
        name: str,
        dim: int,
        modality: str,
        mask_ratio: float,
        teacher_momentum: float | None,
        weight: float,
    ) -> None:
        super().__init__(name=name, weight=weight)
        self.modality, self.mask_ratio = modality, mask_ratio
        self.teacher: nn.Module | None = None  # an EMA copy of the modality's encoder
        self.teacher_momentum = teacher_momentum
        self.head = QueryHead(dim=dim, out=dim)

    def setup(self, encoders: Mapping[str, nn.Module]) -> None:
        """With `teacher_momentum`, the teacher starts as a frozen copy of the encoder."""
        if self.teacher_momentum is not None:
            self.teacher = copy.deepcopy(encoders[self.modality]).requires_grad_(False)

    def labelled(self, batch: Batch) -> Tensor:
        """Samples that have the modality, so that there is something to reconstruct."""
        return batch.present[self.modality]

    def forward(self, view: TaskView) -> Tensor:
        """(B, 2, D): the predicted embedding and the target it is compared with."""
        hidden = view.hiding(self.modality, self.mask_ratio if self.training else 1.0)
        predicted = self.decoded(hidden)[:, 0]
        return torch.stack([predicted, self.target_embedding(view)], dim=1)

    @torch.no_grad()
    def target_embedding(self, view: TaskView) -> Tensor:
        """(B, D) the modality's pooled tokens, from the EMA teacher when there is one."""
        if self.teacher is None:
            return view.target_embeddings[self.modality]
        batch = view.batch
        taught = self.teacher(batch.inputs[self.modality], batch.lengths[self.modality])
        taught = hide(taught, batch.present[self.modality])
        return masked_mean(taught.tokens, taught.mask)

    @torch.no_grad()
    def after_step(self, encoders: Mapping[str, nn.Module]) -> None:
        """The teacher moves towards the encoder by 1 - momentum."""
        if self.teacher is None or self.teacher_momentum is None:
            return
        student = encoders[self.modality].parameters()
        for mine, theirs in zip(self.teacher.parameters(), student, strict=True):
            mine.lerp_(theirs, 1 - self.teacher_momentum)

    def loss(self, prediction: Tensor, batch: Batch) -> Tensor:
        keep = self.labelled(batch)
        if not keep.any():
            return no_loss(prediction)
        predicted, target = prediction[keep].unbind(1)
        return (1 - F.cosine_similarity(predicted, target, dim=-1)).mean()

    def describe(self, prediction: Tensor) -> dict[str, Any]:
        """The imputed embedding of the modality."""
        return {
            "modality": self.modality,
            "embedding": [round(v, 6) for v in prediction[0].tolist()],
        }

    def metrics(self, prediction: Tensor, target: Tensor) -> dict[str, float]:
        """Mean cosine similarity of imputed and true embeddings, and R@k of the true
        embedding among every evaluated sample's, queried with the imputed one."""
        if len(prediction) == 0:
            return {"cosine": float("nan")}
        predicted, true = F.normalize(prediction, dim=-1).unbind(1)
        ranks = retrieval_ranks(predicted, true)
        cosine = (predicted * true).sum(-1).mean().item()
        return {"cosine": cosine} | {f"retrieval_{k}": v for k, v in recall_at_k(ranks).items()}


@register_task("reconstruction")
class ReconstructionSpec(TaskSpec):
    """Predict `modality`'s pooled embedding from the other modalities; with `mask_ratio` < 1,
    training hides only that fraction of its tokens (masked modelling: the rest stay visible);
    `teacher_momentum` (e.g. 0.99) takes the targets from an EMA copy of its encoder."""

    def __init__(
        self,
        name: str,
        *,
        modality: str,
        mask_ratio: float = 1.0,
        teacher_momentum: float | None = None,
        weight: float = 1.0,
    ) -> None:
        super().__init__(name, weight=weight)
        if not 0 < mask_ratio <= 1:
            raise ConfigError(f"model.tasks.{name}.mask_ratio: must be in (0, 1], got {mask_ratio}")
        if teacher_momentum is not None and not 0 <= teacher_momentum < 1:
            raise ConfigError(
                f"model.tasks.{name}.teacher_momentum: must be in [0, 1), got {teacher_momentum}"
            )
        self.modality, self.mask_ratio = modality, mask_ratio
        self.teacher_momentum = teacher_momentum

    def reads(self) -> dict[str, list[str]]:
        return {"modality": [self.modality]}

    def unmet(self, modalities: Sequence[str]) -> str | None:
        if len(modalities) < 2 and self.modality in modalities:
            return "modality: reconstruction predicts one modality from others; there is only one"
        return super().unmet(modalities)

    def build(self, *, dim: int, modalities: Sequence[str]) -> Reconstruction:
        return Reconstruction(
            name=self.name,
            dim=dim,
            modality=self.modality,
            mask_ratio=self.mask_ratio,
            teacher_momentum=self.teacher_momentum,
            weight=self.weight,
        )
