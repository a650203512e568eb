"""The unimodal baseline: reads one modality and nothing else. The other modalities may be in
the config (their encoders are built) but their tokens never reach the output, so a model with
this fusion measures what that modality alone can predict.

Its tokens go through `depth` transformer layers beside a learned token that is always valid,
so a sample lacking the modality reads that token alone: a learned prior.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from omnifuse.fusion.base import require_modality, sized, zero_masked
from omnifuse.interfaces import Fused, Tokens
from omnifuse.layers.attention import SelfAttentionBlock, masked_mean
from omnifuse.registry import register_fusion


class UnimodalFusion(nn.Module):
    def __init__(self, *, dim: int, modality: str, depth: int, heads: int, width: int) -> None:
        super().__init__()
        self.width = width
        self.modality = modality
        self.prior = nn.Parameter(torch.randn(1, dim) * 0.02)
        self.blocks = nn.ModuleList(
            SelfAttentionBlock(dim=dim, heads=heads, mlp_width=width) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, inputs: dict[str, Tokens]) -> Fused:
        tokens = inputs[self.modality]
        batch = tokens.tokens.shape[0]
        x = torch.cat([self.prior.expand(batch, 1, -1), tokens.tokens], 1)
        mask = torch.cat([tokens.mask.new_ones(batch, 1), tokens.mask], 1)
        for block in self.blocks:
            x = block(x, mask)
        x = zero_masked(self.norm(x), mask)
        return Fused(x, mask, masked_mean(x, mask))


@register_fusion("unimodal")
def unimodal(
    dim: int,
    modalities: Sequence[str],
    *,
    modality: str | None = None,
    depth: int = 1,
    heads: int = 4,
    width: int | None = None,
    budget: int | None = None,
) -> nn.Module:
    """Only `modality` (required when the config has several): `depth` transformer layers;
    `width` hidden units per MLP (default 2 * dim), or the width that gives about `budget`
    parameters."""
    name = require_modality(modality, modalities, "modality")
    return sized(
        lambda w: UnimodalFusion(dim=dim, modality=name, depth=depth, heads=heads, width=w),
        width=width,
        budget=budget,
        default=2 * dim,
    )
