"""Pairwise cross-modal attention, MulT-style (Tsai et al., 2019): for every ordered pair of
modalities (target, source), the target's tokens attend to the source's tokens through
`depth` cross-modal transformer layers of that pair's own. Each target then concatenates what
it read from every other modality, projects it back to `dim` and refines it with a
self-attention layer; the fused tokens are all targets' tokens together.

Every source has a learned, always-valid "null" key: a target whose source is absent for a
sample attends to it alone, so the absent source's content is never read and no softmax is
taken over nothing. With a single modality there are no pairs and only the self-attention
remains.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import nn

from omnifuse.fusion.base import batch_size, sized, zero_masked
from omnifuse.interfaces import Fused, Tokens
from omnifuse.layers.attention import CrossAttentionBlock, SelfAttentionBlock, masked_mean
from omnifuse.registry import register_fusion


def pair(target: str, source: str) -> str:
    return f"{target}<-{source}"


class CrossModalFusion(nn.Module):
    def __init__(
        self, *, dim: int, modalities: Sequence[str], depth: int, heads: int, width: int
    ) -> None:
        super().__init__()
        self.width = width
        self.names = sorted(modalities)
        self.null = nn.ParameterDict(
            {name: nn.Parameter(torch.randn(1, dim) * 0.02) for name in self.names}
            if len(self.names) > 1
            else {}
        )
        self.cross = nn.ModuleDict(
            {
                pair(t, s): nn.ModuleList(
                    CrossAttentionBlock(dim=dim, heads=heads, mlp_width=width) for _ in range(depth)
                )
                for t in self.names
                for s in self.names
                if s != t
            }
        )
        others = max(1, len(self.names) - 1)
        self.merge = nn.ModuleDict({t: nn.Linear(others * dim, dim) for t in self.names})
        self.refine = nn.ModuleDict(
            {t: SelfAttentionBlock(dim=dim, heads=heads, mlp_width=width) for t in self.names}
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, inputs: dict[str, Tokens]) -> Fused:
        batch = batch_size(inputs)
        outputs, masks = [], []
        for target in self.names:
            x, mask = inputs[target].tokens, inputs[target].mask
            reads = []
            for source in self.names:
                if source == target:
                    continue
                context = torch.cat(
                    [self.null[source].expand(batch, 1, -1), inputs[source].tokens], 1
                )
                valid = torch.cat([mask.new_ones(batch, 1), inputs[source].mask], 1)
                y = x
                for block in cast(nn.ModuleList, self.cross[pair(target, source)]):
                    y = block(y, context, valid)
                reads.append(y)  # (B, N_target, D)
            merged = self.merge[target](torch.cat(reads, -1)) if reads else self.merge[target](x)
            outputs.append(self.refine[target](merged, mask))
            masks.append(mask)
        tokens, mask = torch.cat(outputs, 1), torch.cat(masks, 1)
        tokens = zero_masked(self.norm(tokens), mask)
        return Fused(tokens, mask, masked_mean(tokens, mask))


@register_fusion("cross_attention")
def cross_attention(
    dim: int,
    modalities: Sequence[str],
    *,
    depth: int = 1,
    heads: int = 4,
    width: int | None = None,
    budget: int | None = None,
) -> nn.Module:
    """`depth` cross-modal layers per ordered pair of modalities, then one self-attention layer
    per modality; `width` hidden units per MLP (default 2 * dim), or the width that gives about
    `budget` parameters."""
    return sized(
        lambda w: CrossModalFusion(
            dim=dim, modalities=modalities, depth=depth, heads=heads, width=w
        ),
        width=width,
        budget=budget,
        default=2 * dim,
    )
