"""Perceiver IO decoding: every task's learned output queries cross-attend to the fused tokens.

One `QueryDecoder` serves all tasks of a model; a task owns only its queries and an output
layer (`QueryHead`): one query for a classification or regression task, one per position for
a sequence output (text generation, token reconstruction). Adding a task adds queries, not a
decoder. Queries never attend to each other, so decoding all tasks' queries in one pass gives
exactly what decoding each task alone would.

    decoder = QueryDecoder(dim=64)
    read = decoder(fused, {"scene": scene.queries, "score": score.queries})  # task -> (B, Q, D)
    logits = scene(read["scene"])                                          # (B, Q, classes)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from omnifuse.interfaces import Fused
from omnifuse.layers.attention import CrossAttentionBlock


class QueryDecoder(nn.Module):
    """One cross-attention block (+ MLP) in which any number of queries read the fused tokens."""

    def __init__(self, *, dim: int, heads: int = 4) -> None:
        super().__init__()
        self.read = CrossAttentionBlock(dim=dim, heads=heads)
        self.norm = nn.LayerNorm(dim)

    def forward(self, fused: Fused, queries: dict[str, Tensor]) -> dict[str, Tensor]:
        """`queries`: task -> (Q_task, D); returns task -> (B, Q_task, D), in the same order."""
        if not queries:
            return {}
        names = list(queries)
        batch = fused.tokens.shape[0]
        stacked = torch.cat([queries[n] for n in names], 0).expand(batch, -1, -1)  # (B, Q, D)
        read = self.norm(self.read(stacked, fused.tokens, fused.mask))
        sizes = [queries[n].shape[0] for n in names]
        return dict(zip(names, read.split(sizes, dim=1), strict=True))


class QueryHead(nn.Module):
    """A task's `queries` learned output queries and the linear layer that maps each decoded
    query to `out` values."""

    def __init__(self, *, dim: int, out: int, queries: int = 1) -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.randn(queries, dim) * 0.02)
        self.out = nn.Linear(dim, out)

    def forward(self, decoded: Tensor) -> Tensor:
        return self.out(decoded)  # (B, queries, out)
