"""Contrastive alignment of two modalities (CLIP's InfoNCE), for cross-modal retrieval.

Each modality's pooled encoder tokens are projected and normalised; the loss pulls the two
embeddings of a sample together and pushes other samples' apart. Samples lacking either
modality are left out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from omnifuse.data.batch import Batch
from omnifuse.errors import ConfigError
from omnifuse.eval.metrics import recall_at_k, retrieval_ranks
from omnifuse.registry import register_task
from omnifuse.tasks.base import Task, TaskInput, no_loss


def clip_loss(first: Tensor, second: Tensor, logit_scale: Tensor) -> Tensor:
    """Symmetric cross-entropy over the (N, N) similarities of normalised embeddings."""
    logits = logit_scale.exp() * first @ second.T
    labels = torch.arange(len(first), device=first.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


class Alignment(Task):
    def __init__(
        self,
        *,
        name: str,
        dim: int,
        modalities: list[str],
        embed_dim: int,
        temperature: float,
        weight: float,
    ) -> None:
        super().__init__(name=name, weight=weight)
        self.pair = sorted(modalities)
        self.projections = nn.ModuleDict({m: nn.Linear(dim, embed_dim) for m in self.pair})
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / temperature)))

    def labelled(self, batch: Batch) -> Tensor:
        first, second = self.pair
        return batch.present[first] & batch.present[second]

    def forward(self, x: TaskInput) -> Tensor:
        projected = [F.normalize(self.projections[m](x.embeddings[m]), dim=-1) for m in self.pair]
        return torch.stack(projected, dim=1)  # (B, 2, embed_dim)

    def loss(self, prediction: Tensor, batch: Batch) -> Tensor:
        keep = self.labelled(batch)
        if keep.sum() < 2:
            return no_loss(prediction)
        pairs = prediction[keep]
        return clip_loss(pairs[:, 0], pairs[:, 1], self.logit_scale.clamp(max=math.log(100)))

    def metrics(self, prediction: Tensor, target: Tensor) -> dict[str, float]:
        first, second = self.pair
        results: dict[str, float] = {}
        for a, b, (qa, qb) in ((first, second, (0, 1)), (second, first, (1, 0))):
            ranks = retrieval_ranks(prediction[:, qa], prediction[:, qb])
            results |= {f"{a}_to_{b}_{k}": v for k, v in recall_at_k(ranks).items()}
        return results


@register_task("alignment")
def alignment(
    name: str,
    dim: int,
    modalities: Sequence[str],
    *,
    pair: list[str],
    embed_dim: int = 64,
    temperature: float = 0.07,
    weight: float = 1.0,
) -> Alignment:
    """Align the two modalities in `pair` (each embedded from its own tokens alone)."""
    if len(set(pair)) != 2:
        raise ConfigError(f"model.tasks.{name}.pair: name two different modalities")
    return Alignment(
        name=name,
        dim=dim,
        modalities=list(pair),
        embed_dim=embed_dim,
        temperature=temperature,
        weight=weight,
    )
