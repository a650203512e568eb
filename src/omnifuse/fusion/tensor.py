"""Tensor fusion (Zadeh et al., 2017): each modality's pooled vector, projected to `width`
units and extended with a constant 1, enters an outer product over all modalities; a linear
layer reads the (width + 1) ** P products. The constant 1 keeps every lower-order term (each
modality alone, each pair, ...) alongside the full P-way interactions.

An absent modality's pooled vector is replaced by a learned "absent" embedding before any
product, so a zero never wipes out the whole product and absent content is never read.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import reduce

import torch
from einops import rearrange
from torch import Tensor, nn

from omnifuse.fusion.base import pooled_or_absent, sized, vector
from omnifuse.interfaces import Fused, Tokens
from omnifuse.registry import register_fusion

# default width: the largest whose product has at most this many terms
DEFAULT_TERMS = 4096


class TensorFusion(nn.Module):
    def __init__(self, *, dim: int, modalities: Sequence[str], width: int) -> None:
        super().__init__()
        self.width = width
        self.names = sorted(modalities)
        self.absent = nn.ParameterDict(
            {name: nn.Parameter(torch.randn(dim) * 0.02) for name in self.names}
        )
        self.project = nn.ModuleDict(
            {
                name: nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, width), nn.Tanh())
                for name in self.names
            }
        )
        terms = (width + 1) ** len(self.names)
        self.out = nn.Sequential(
            nn.LayerNorm(terms), nn.Linear(terms, dim), nn.GELU(), nn.Linear(dim, dim)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, inputs: dict[str, Tokens]) -> Fused:
        factors = []
        for name in self.names:
            z = self.project[name](pooled_or_absent(inputs[name], self.absent[name]))
            factors.append(torch.cat([z, torch.ones_like(z[:, :1])], -1))  # (B, width + 1)
        product = reduce(outer, factors)  # (B, (width + 1) ** P)
        return vector(self.norm(self.out(product)))


def outer(left: Tensor, right: Tensor) -> Tensor:
    """Batched outer product, flattened: (B, m), (B, n) -> (B, m * n)."""
    return rearrange(left[:, :, None] * right[:, None, :], "b m n -> b (m n)")


def default_width(modalities: int) -> int:
    width = max(1, math.floor(DEFAULT_TERMS ** (1 / modalities)) - 1)
    while width > 1 and (width + 1) ** modalities > DEFAULT_TERMS:
        width -= 1
    return width


@register_fusion("tensor")
def tensor(
    dim: int,
    modalities: Sequence[str],
    *,
    width: int | None = None,
    budget: int | None = None,
) -> nn.Module:
    """Outer product of the per-modality vectors, each `width` units plus a constant 1
    (default: the largest width with at most 4096 products), or the width that gives about
    `budget` parameters."""
    return sized(
        lambda w: TensorFusion(dim=dim, modalities=modalities, width=w),
        width=width,
        budget=budget,
        default=default_width(len(modalities)),
    )
