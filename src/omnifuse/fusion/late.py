"""Late fusion: one predictor per modality, predictions combined over the modalities present.

Each modality's tokens go through their own transformer layers into a part of their own; the
model decodes every task on every part (the task heads see one modality at a time) and takes
the weighted mean of the predictions (`Fused.combine`). The weights are equal (`mean`) or
learned per modality (`learned`: a softmax over the modalities present in each sample). No
head ever reads two modalities together, so nothing here can model an interaction between
modalities: a label like `pattern XOR hum` stays out of reach (see docs/ARCHITECTURE.md).

A sample lacking a modality gives that part weight 0. A sample lacking every modality reads a
learned "absent" token in each part and averages over all parts, a learned prior.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from omnifuse.fusion.base import batch_size, present, sized, zero_masked
from omnifuse.interfaces import Fused, Tokens
from omnifuse.layers.attention import SelfAttentionBlock, masked_mean
from omnifuse.registry import register_fusion


class ModalityPredictor(nn.Module):
    """One modality's own layers: its tokens, plus a learned token read only when it is absent."""

    def __init__(self, *, dim: int, depth: int, heads: int, width: int) -> None:
        super().__init__()
        self.absent = nn.Parameter(torch.randn(1, dim) * 0.02)
        self.blocks = nn.ModuleList(
            SelfAttentionBlock(dim=dim, heads=heads, mlp_width=width) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: Tokens) -> Fused:
        batch = tokens.tokens.shape[0]
        absent = ~present(tokens)[:, None]  # (B, 1)
        x = torch.cat([self.absent.expand(batch, 1, -1), tokens.tokens], 1)
        mask = torch.cat([absent, tokens.mask], 1)  # never empty
        for block in self.blocks:
            x = block(x, mask)
        x = zero_masked(self.norm(x), mask)
        return Fused(x, mask, masked_mean(x, mask))


class LateFusion(nn.Module):
    def __init__(
        self,
        *,
        dim: int,
        modalities: Sequence[str],
        depth: int,
        heads: int,
        width: int,
        combine: Literal["mean", "learned"],
    ) -> None:
        super().__init__()
        self.width = width
        self.names = sorted(modalities)
        self.predictors = nn.ModuleDict(
            {
                name: ModalityPredictor(dim=dim, depth=depth, heads=heads, width=width)
                for name in self.names
            }
        )
        # one logit per modality, renormalised over the modalities present in each sample
        self.logits = nn.Parameter(torch.zeros(len(self.names))) if combine == "learned" else None

    def forward(self, inputs: dict[str, Tokens]) -> Fused:
        batch = batch_size(inputs)
        parts = {name: self.predictors[name](inputs[name]) for name in self.names}
        here = torch.stack([present(inputs[name]) for name in self.names], 1)  # (B, P)
        allowed = here | ~here.any(1, keepdim=True)  # nothing present: a prior over all parts
        logits = self.logits if self.logits is not None else here.new_zeros(len(self.names))
        logits = logits.to(parts[self.names[0]].pooled.dtype).expand(batch, -1)
        weights = torch.softmax(logits.masked_fill(~allowed, float("-inf")), dim=1)  # (B, P)
        pooled = torch.stack([parts[n].pooled for n in self.names], 1)  # (B, P, D)
        return Fused(
            tokens=zero_masked(pooled, allowed),
            mask=allowed,
            pooled=(weights[..., None] * pooled).sum(1),
            parts=parts,
            weights={name: weights[:, i] for i, name in enumerate(self.names)},
        )


@register_fusion("late")
def late(
    dim: int,
    modalities: Sequence[str],
    *,
    combine: Literal["mean", "learned"] = "learned",
    depth: int = 1,
    heads: int = 4,
    width: int | None = None,
    budget: int | None = None,
) -> nn.Module:
    """Per-modality predictors (`depth` transformer layers each; `width` hidden units per MLP,
    default 2 * dim, or the width that gives about `budget` parameters), their predictions
    averaged over the modalities present: equally (`mean`) or with learned weights."""
    return sized(
        lambda w: LateFusion(
            dim=dim, modalities=modalities, depth=depth, heads=heads, width=w, combine=combine
        ),
        width=width,
        budget=budget,
        default=2 * dim,
    )
