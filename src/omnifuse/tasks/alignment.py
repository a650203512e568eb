"""Contrastive alignment between two or more modalities, for cross-modal retrieval and
zero-shot classification.

Each modality's pooled encoder tokens go through its own projection head and are
L2-normalised; every unordered pair of the `between` modalities is aligned by its own
contrastive loss: CLIP's symmetric InfoNCE with a learnable temperature (Radford et al. 2021)
or SigLIP's pairwise sigmoid loss with a learnable temperature and bias (Zhai et al. 2023).
A pair's loss reads only the samples that have both sides; the task's loss is the mean over
the pairs that have at least two such samples. Under torch.distributed the losses gather the
embeddings of every rank, with gradients, so each sample meets every rank's negatives.

    spec = create_task("alignment", "align", between=["image", "text", "audio"], loss="siglip")
    task = spec.build(dim=64, modalities=["audio", "image", "text"])
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from omnifuse import ranks
from omnifuse.errors import ConfigError, OmnifuseError
from omnifuse.interfaces import Batch
from omnifuse.metrics import retrieval_metrics, retrieval_ranks
from omnifuse.registry import register_task
from omnifuse.tasks.base import Task, TaskSpec, TaskView, no_loss

MAX_LOGIT_SCALE = math.log(100)  # CLIP's clamp: similarities scaled by at most 100
SIGLIP_TEMPERATURE = 0.1  # SigLIP's t' starts at log(10)
SIGLIP_BIAS = -10.0


def clip_terms(first: Tensor, second: Tensor, logit_scale: Tensor, rows: slice) -> Tensor:
    """(R,) symmetric InfoNCE terms of the samples `rows`, each against all N samples.

    first, second: (N, E) normalised embeddings, row i of each from the same sample. A term is
    the mean of the cross-entropies of retrieving the sample's `second` from its `first` and
    the reverse; the loss is their mean over all N samples.
    """
    scale = logit_scale.exp()
    labels = torch.arange(len(first), device=first.device)[rows]
    forward = scale * first[rows] @ second.T  # (R, N): sample r's first against every second
    backward = scale * second[rows] @ first.T
    return (
        F.cross_entropy(forward, labels, reduction="none")
        + F.cross_entropy(backward, labels, reduction="none")
    ) / 2


def siglip_terms(
    first: Tensor, second: Tensor, logit_scale: Tensor, bias: Tensor, rows: slice
) -> Tensor:
    """(R,) SigLIP terms of the samples `rows`: -sum_j log sigmoid(z_ij (exp(t') x_i.y_j + b))
    with z_ij = 1 for the sample's own `second` (j = i) and -1 for every other; the loss is
    their mean over all N samples."""
    logits = logit_scale.exp() * first[rows] @ second.T + bias  # (R, N)
    labels = torch.arange(len(first), device=first.device)[rows]
    signs = -torch.ones_like(logits)
    signs[torch.arange(len(logits), device=logits.device), labels] = 1.0
    return -F.logsigmoid(signs * logits).sum(1)


def clip_loss(first: Tensor, second: Tensor, logit_scale: Tensor) -> Tensor:
    """Symmetric InfoNCE over the (N, N) scaled similarities of normalised embeddings."""
    return clip_terms(first, second, logit_scale, slice(None)).mean()


def siglip_loss(first: Tensor, second: Tensor, logit_scale: Tensor, bias: Tensor) -> Tensor:
    """SigLIP: -(1/N) sum_ij log sigmoid(z_ij (exp(t') x_i.y_j + b)) over normalised embeddings."""
    return siglip_terms(first, second, logit_scale, bias, slice(None)).mean()


def gather(x: Tensor) -> tuple[Tensor, int]:
    """Every rank's rows of `x` (N_r, ...) concatenated in rank order, with gradients flowing
    back to each rank's own rows, and the offset of this rank's rows; `x` and 0 in a single
    process. Ranks may hold different numbers of rows (samples lacking a side are left out)."""
    if not ranks.active():
        return x, 0
    from torch.distributed.nn.functional import all_gather

    sizes = [
        torch.zeros(1, dtype=torch.long, device=x.device) for _ in range(dist.get_world_size())
    ]
    dist.all_gather(sizes, torch.tensor([len(x)], device=x.device))
    counts = [int(s) for s in sizes]
    padded = F.pad(x, (0, 0) * (x.ndim - 1) + (0, max(counts) - len(x)))  # pad rows
    parts = all_gather(padded)
    rank = dist.get_rank()
    return torch.cat([p[:n] for p, n in zip(parts, counts, strict=True)]), sum(counts[:rank])


class ContrastiveLoss(nn.Module):
    """One pair's loss over (N, 2, E) normalised embeddings (the two sides of N samples).

    Under torch.distributed every rank computes the terms of its own samples against all
    ranks' samples, scaled so that the mean of the ranks' losses (what DDP's gradient
    averaging optimises) is the loss over all samples.
    """

    def terms(self, first: Tensor, second: Tensor, rows: slice) -> Tensor:
        raise NotImplementedError

    def forward(self, pairs: Tensor) -> Tensor | None:
        """The loss, or None when all ranks together have fewer than two samples."""
        everyone, offset = gather(pairs.float())  # (N_all, 2, E); float32 whatever computed it
        if len(everyone) < 2:
            return None
        rows = slice(offset, offset + len(pairs))
        terms = self.terms(everyone[:, 0], everyone[:, 1], rows)
        world = ranks.world()
        # + 0 * everyone: a rank without samples still runs the gather's backward
        return terms.sum() * world / len(everyone) + no_loss(everyone)


class ClipLoss(ContrastiveLoss):
    """CLIP's symmetric InfoNCE; the logit scale starts at log(1 / temperature) and is clamped
    at log(100)."""

    def __init__(self, *, temperature: float) -> None:
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / temperature)))

    def terms(self, first: Tensor, second: Tensor, rows: slice) -> Tensor:
        return clip_terms(first, second, self.logit_scale.clamp(max=MAX_LOGIT_SCALE), rows)


class SigLipLoss(ContrastiveLoss):
    """SigLIP's sigmoid loss; t' starts at log(1 / temperature) (log 10), the bias at -10."""

    def __init__(self, *, temperature: float) -> None:
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / temperature)))
        self.bias = nn.Parameter(torch.tensor(SIGLIP_BIAS))

    def terms(self, first: Tensor, second: Tensor, rows: slice) -> Tensor:
        return siglip_terms(first, second, self.logit_scale, self.bias, rows)


LOSSES: dict[str, tuple[type[ContrastiveLoss], float]] = {
    "clip": (ClipLoss, 0.07),
    "siglip": (SigLipLoss, SIGLIP_TEMPERATURE),
}


class Alignment(Task):
    """Prediction: (B, M, E), each sample's normalised embedding of every modality of
    `between` (sorted); a modality the sample lacks gets an embedding that means nothing, so
    `evaluation_target` gives the (B, M) presence that metrics read."""

    def __init__(
        self,
        *,
        name: str,
        dim: int,
        between: list[str],
        embed_dim: int,
        loss: str,
        temperature: float | None,
        weight: float,
    ) -> None:
        super().__init__(name=name, weight=weight)
        self.between = sorted(between)
        self.pairs = list(itertools.combinations(self.between, 2))
        self.projections = nn.ModuleDict({m: nn.Linear(dim, embed_dim) for m in self.between})
        kind, default = LOSSES[loss]
        self.losses = nn.ModuleDict(
            {f"{a}:{b}": kind(temperature=temperature or default) for a, b in self.pairs}
        )

    def presence(self, batch: Batch) -> Tensor:
        """(B, M) which of the `between` modalities each sample has."""
        return torch.stack([batch.present[m] for m in self.between], dim=1)

    def labelled(self, batch: Batch) -> Tensor:
        """Samples with at least two of the modalities: they take part in some pair."""
        return self.presence(batch).sum(1) >= 2

    def evaluation_target(self, batch: Batch) -> Tensor:
        return self.presence(batch)

    def project(self, modality: str, pooled: Tensor) -> Tensor:
        """(B, E) normalised embedding of `modality`'s pooled encoder tokens (B, D)."""
        return F.normalize(self.projections[modality](pooled), dim=-1)

    def forward(self, view: TaskView) -> Tensor:
        projected = [self.project(m, view.embeddings[m]) for m in self.between]
        return torch.stack(projected, dim=1)  # (B, M, E)

    def loss(self, prediction: Tensor, batch: Batch) -> Tensor:
        """The mean over pairs of each pair's loss on the samples having both of its sides;
        pairs with fewer than two such samples (over all ranks) do not count."""
        present = self.presence(batch)
        losses = []
        for a, b in self.pairs:
            i, j = self.between.index(a), self.between.index(b)
            both = present[:, i] & present[:, j]
            # every rank runs every pair's loss (and its gather), whatever its own samples
            pair_loss = self.losses[f"{a}:{b}"](prediction[both][:, [i, j]])
            if pair_loss is not None:
                losses.append(pair_loss)
        if not losses:
            return no_loss(prediction)
        return torch.stack(losses).mean()

    def metrics(self, prediction: Tensor, target: Tensor) -> dict[str, float]:
        """`{a}_to_{b}_R@1/5/10`, `_median_rank` and `_mrr` for every ordered pair: each sample
        having both sides queries with its `a` embedding among all such samples' `b` ones."""
        results: dict[str, float] = {}
        for a, b in itertools.permutations(self.between, 2):
            i, j = self.between.index(a), self.between.index(b)
            both = target[:, i].bool() & target[:, j].bool()
            ranks = retrieval_ranks(prediction[both, i], prediction[both, j])
            results |= {f"{a}_to_{b}_{k}": v for k, v in retrieval_metrics(ranks).items()}
        return results


@register_task("alignment")
class AlignmentSpec(TaskSpec):
    """Align every pair of the modalities in `between` (two or more), each embedded from its
    own tokens alone, with `loss` clip (InfoNCE) or siglip (sigmoid). `temperature` sets the
    initial learnable temperature (default 0.07 for clip, 0.1 for siglip)."""

    def __init__(
        self,
        name: str,
        *,
        between: list[str],
        loss: Literal["clip", "siglip"] = "clip",
        embed_dim: int = 64,
        temperature: float | None = None,
        weight: float = 1.0,
    ) -> None:
        super().__init__(name, weight=weight)
        if len(between) < 2 or len(set(between)) != len(between):
            raise ConfigError(
                f"model.tasks.{name}.between: name two or more different modalities, got {between}"
            )
        if temperature is not None and temperature <= 0:
            raise ConfigError(
                f"model.tasks.{name}.temperature: must be positive, got {temperature}"
            )
        self.between, self.loss, self.embed_dim = list(between), loss, embed_dim
        self.temperature = temperature

    def reads(self) -> dict[str, list[str]]:
        return {"between": self.between}

    def build(self, *, dim: int, modalities: Sequence[str]) -> Alignment:
        return Alignment(
            name=self.name,
            dim=dim,
            between=self.between,
            embed_dim=self.embed_dim,
            loss=self.loss,
            temperature=self.temperature,
            weight=self.weight,
        )


def aligned_task(
    tasks: Mapping[str, Task],
    name: str | None = None,
    *,
    where: Callable[[Alignment], bool] = lambda task: True,
    what: str = "alignment task",
) -> Alignment:
    """The alignment task among `tasks` that satisfies `where` (`what` in messages): the only
    one, or the one called `name`."""
    aligned = {n: t for n, t in tasks.items() if isinstance(t, Alignment) and where(t)}
    if not aligned:
        raise OmnifuseError(f"the model has no {what}")
    if name is None:
        if len(aligned) > 1:
            raise OmnifuseError(f"several tasks are each an {what}; pick one of {sorted(aligned)}")
        name = next(iter(aligned))
    if name not in aligned:
        raise OmnifuseError(f"no {what} '{name}'; the model has {sorted(aligned)}")
    return aligned[name]
