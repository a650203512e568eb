"""Reconstruction: predict a modality's pooled embedding from the other modalities.

The model hides `modality` from every sample and fuses the rest once more for this task
(`Task.hides`), or in training, with `mask_ratio` < 1, hides only that fraction of its tokens
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

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from omnifuse.data.batch import Batch
from omnifuse.errors import ConfigError
from omnifuse.eval.metrics import recall_at_k, retrieval_ranks
from omnifuse.heads.query import QueryHead
from omnifuse.registry import closest, register_task
from omnifuse.tasks.base import Task, TaskInput, no_loss


class Reconstruction(Task):
    head: QueryHead
    hides: str

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
        self.hides = modality
        self.hide_ratio = mask_ratio
        self.teacher_momentum = teacher_momentum
        self.head = QueryHead(dim=dim, out=dim)

    def labelled(self, batch: Batch) -> Tensor:
        """Samples that have the modality, so that there is something to reconstruct."""
        return batch.present[self.hides]

    def forward(self, x: TaskInput) -> Tensor:
        """(B, 2, D): the predicted embedding and the target it is compared with."""
        assert x.decoded is not None
        predicted = self.head(x.decoded)[:, 0]
        return torch.stack([predicted, x.targets[self.hides]], dim=1)

    def loss(self, prediction: Tensor, batch: Batch) -> Tensor:
        keep = self.labelled(batch)
        if not keep.any():
            return no_loss(prediction)
        predicted, target = prediction[keep].unbind(1)
        return (1 - F.cosine_similarity(predicted, target, dim=-1)).mean()

    def describe(self, prediction: Tensor) -> dict[str, Any]:
        """The imputed embedding of the modality."""
        return {"modality": self.hides, "embedding": [round(v, 6) for v in prediction[0].tolist()]}

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
def reconstruction(
    name: str,
    dim: int,
    modalities: Sequence[str],
    *,
    modality: str,
    mask_ratio: float = 1.0,
    teacher_momentum: float | None = None,
    weight: float = 1.0,
) -> Reconstruction:
    """Predict `modality`'s pooled embedding from the other modalities; with `mask_ratio` < 1,
    training hides only that fraction of its tokens (masked modelling: the rest stay visible);
    `teacher_momentum` (e.g. 0.99) takes the targets from an EMA copy of its encoder."""
    if modality not in modalities:
        raise ConfigError(
            f"model.tasks.{name}.modality: unknown modality '{modality}'"
            f"{closest(modality, list(modalities))}; the config defines {', '.join(modalities)}"
        )
    if len(modalities) < 2:
        raise ConfigError(
            f"model.tasks.{name}: reconstruction predicts one modality from others; "
            "the config has only one"
        )
    if not 0 < mask_ratio <= 1:
        raise ConfigError(f"model.tasks.{name}.mask_ratio: must be in (0, 1], got {mask_ratio}")
    if teacher_momentum is not None and not 0 <= teacher_momentum < 1:
        raise ConfigError(
            f"model.tasks.{name}.teacher_momentum: must be in [0, 1), got {teacher_momentum}"
        )
    return Reconstruction(
        name=name,
        dim=dim,
        modality=modality,
        mask_ratio=mask_ratio,
        teacher_momentum=teacher_momentum,
        weight=weight,
    )
