"""Perceiver IO decoding: learned output queries cross-attend to the fused tokens."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from omnifuse.fusion.base import Fused
from omnifuse.layers.attention import CrossAttentionBlock


class QueryHead(nn.Module):
    """`queries` learned queries read the fused tokens, then a linear layer maps each to `out`."""

    def __init__(self, *, dim: int, out: int, queries: int = 1, heads: int = 4) -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.randn(queries, dim) * 0.02)
        self.read = CrossAttentionBlock(dim=dim, heads=heads)
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, out)

    def forward(self, fused: Fused) -> Tensor:
        batch = fused.tokens.shape[0]
        queries = self.read(self.queries.expand(batch, -1, -1), fused.tokens, fused.mask)
        return self.out(self.norm(queries))  # (B, queries, out)
