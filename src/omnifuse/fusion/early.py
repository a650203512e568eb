"""Early fusion: every modality's tokens, tagged with a learned modality embedding, are
concatenated into one sequence that a transformer reads whole. Every token attends to every
other, so cost grows with the square of the total number of tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from omnifuse.fusion.base import batch_size, sized, zero_masked
from omnifuse.interfaces import Fused, Tokens
from omnifuse.layers.attention import SelfAttentionBlock, masked_mean
from omnifuse.registry import register_fusion


class EarlyFusion(nn.Module):
    def __init__(
        self, *, dim: int, modalities: Sequence[str], depth: int, heads: int, width: int
    ) -> None:
        super().__init__()
        self.width = width
        self.modality = nn.ParameterDict(
            {name: nn.Parameter(torch.randn(dim) * 0.02) for name in sorted(modalities)}
        )
        # A summary token, always valid: a sample lacking every modality still has a key.
        self.summary = nn.Parameter(torch.randn(1, dim) * 0.02)
        self.blocks = nn.ModuleList(
            SelfAttentionBlock(dim=dim, heads=heads, mlp_width=width) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, inputs: dict[str, Tokens]) -> Fused:
        batch = batch_size(inputs)
        tokens = [self.summary.expand(batch, 1, -1)]
        masks = [torch.ones(batch, 1, dtype=torch.bool, device=self.summary.device)]
        for name in sorted(inputs):
            tokens.append(inputs[name].tokens + self.modality[name])
            masks.append(inputs[name].mask)
        x, mask = torch.cat(tokens, 1), torch.cat(masks, 1)  # (B, 1 + sum N_m, D)
        for block in self.blocks:
            x = block(x, mask)
        x = zero_masked(self.norm(x), mask)
        return Fused(x, mask, masked_mean(x, mask))


@register_fusion("early")
def early(
    dim: int,
    modalities: Sequence[str],
    *,
    depth: int = 2,
    heads: int = 4,
    width: int | None = None,
    budget: int | None = None,
) -> nn.Module:
    """`depth` transformer layers over all tokens concatenated; `width` hidden units per MLP
    (default 2 * dim), or the width that gives about `budget` parameters."""
    return sized(
        lambda w: EarlyFusion(dim=dim, modalities=modalities, depth=depth, heads=heads, width=w),
        width=width,
        budget=budget,
        default=2 * dim,
    )
