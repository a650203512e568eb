"""Low-rank multimodal fusion (Liu et al., 2018): tensor fusion's weight tensor factorised
into `rank` rank-one terms, one factor per modality, so the (width + 1) ** P products are
never formed:

    h = sum_r w_r * prod_m (W_m^(r) [z_m; 1]) + b

Cost and parameters grow linearly with the number of modalities instead of exponentially.
An absent modality's pooled vector is replaced by a learned "absent" embedding first, as in
tensor fusion.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from einops import rearrange
from torch import nn

from omnifuse.errors import ConfigError
from omnifuse.fusion.base import pooled_or_absent, sized, vector
from omnifuse.interfaces import Fused, Tokens
from omnifuse.registry import register_fusion


class LowRankFusion(nn.Module):
    def __init__(self, *, dim: int, modalities: Sequence[str], width: int, rank: int) -> None:
        super().__init__()
        self.width = width
        self.names = sorted(modalities)
        self.rank = rank
        self.absent = nn.ParameterDict(
            {name: nn.Parameter(torch.randn(dim) * 0.02) for name in self.names}
        )
        self.project = nn.ModuleDict(
            {
                name: nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, width), nn.Tanh())
                for name in self.names
            }
        )
        # W_m^(r) for every rank r at once: [z_m; 1] (width + 1) -> (rank * dim)
        factors = {name: nn.Linear(width + 1, rank * dim, bias=False) for name in self.names}
        # Each factor starts near 1 (its weight on the constant input), so the product starts
        # as 1 + the per-modality terms + their products, and no factor's gradient is a
        # product of small numbers.
        with torch.no_grad():
            for factor in factors.values():
                factor.weight[:, -1] = 1.0
        self.factors = nn.ModuleDict(factors)
        self.rank_weights = nn.Parameter(torch.full((rank,), 1.0 / rank))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, inputs: dict[str, Tokens]) -> Fused:
        product = None
        for name in self.names:
            z = self.project[name](pooled_or_absent(inputs[name], self.absent[name]))
            z = torch.cat([z, torch.ones_like(z[:, :1])], -1)  # (B, width + 1)
            factor = rearrange(self.factors[name](z), "b (r d) -> b r d", r=self.rank)
            product = factor if product is None else product * factor  # (B, rank, D)
        assert product is not None
        fused = torch.einsum("r,brd->bd", self.rank_weights, product) + self.bias
        return vector(self.out(self.norm(fused)))


@register_fusion("low_rank")
def low_rank(
    dim: int,
    modalities: Sequence[str],
    *,
    rank: int = 4,
    width: int | None = None,
    budget: int | None = None,
) -> nn.Module:
    """Rank-`rank` factors of the tensor-fusion weights over per-modality vectors of `width`
    units plus a constant 1 (default width: dim), or the width that gives about `budget`
    parameters."""
    if rank < 1:
        raise ConfigError(f"model.fusion.rank: must be at least 1, got {rank}")
    return sized(
        lambda w: LowRankFusion(dim=dim, modalities=modalities, width=w, rank=rank),
        width=width,
        budget=budget,
        default=dim,
    )
