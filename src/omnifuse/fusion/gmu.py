"""Gated multimodal units (Arevalo et al., 2017): each modality's pooled vector becomes a
candidate h_m = tanh(W_m z_m) of `width` units; a gate computed from all modalities together
decides, unit by unit, how much of each candidate to keep:

    g = softmax over modalities of (W_g [z_1; ...; z_P]),  h = sum_m g_m * h_m

(two modalities: the paper's sigmoid gate z, 1 - z). Because the gate depends on every
modality, the result is a multiplicative interaction, not a fixed mix.

An absent modality's pooled vector is replaced by a learned "absent" embedding in the gate's
input, and its candidate gets gate 0 (the softmax runs over the modalities present); a sample
with none present mixes the candidates of the absent embeddings, a learned prior.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from einops import rearrange
from torch import nn

from omnifuse.fusion.base import pooled_or_absent, present, sized, vector
from omnifuse.interfaces import Fused, Tokens
from omnifuse.registry import register_fusion


class GatedFusion(nn.Module):
    def __init__(self, *, dim: int, modalities: Sequence[str], width: int) -> None:
        super().__init__()
        self.width = width
        self.names = sorted(modalities)
        self.absent = nn.ParameterDict(
            {name: nn.Parameter(torch.randn(dim) * 0.02) for name in self.names}
        )
        self.norm_in = nn.ModuleDict({name: nn.LayerNorm(dim) for name in self.names})
        self.candidate = nn.ModuleDict({name: nn.Linear(dim, width) for name in self.names})
        self.gate = nn.Linear(len(self.names) * dim, len(self.names) * width)
        self.out = nn.Linear(width, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, inputs: dict[str, Tokens]) -> Fused:
        z = [self.norm_in[n](pooled_or_absent(inputs[n], self.absent[n])) for n in self.names]
        candidates = torch.stack(
            [torch.tanh(self.candidate[n](z_m)) for n, z_m in zip(self.names, z, strict=True)], 1
        )  # (B, P, width)
        logits = rearrange(self.gate(torch.cat(z, -1)), "b (p w) -> b p w", p=len(self.names))
        here = torch.stack([present(inputs[n]) for n in self.names], 1)  # (B, P)
        allowed = (here | ~here.any(1, keepdim=True))[..., None]
        gates = torch.softmax(logits.masked_fill(~allowed, float("-inf")), dim=1)
        return vector(self.norm(self.out((gates * candidates).sum(1))))


@register_fusion("gmu")
def gmu(
    dim: int,
    modalities: Sequence[str],
    *,
    width: int | None = None,
    budget: int | None = None,
) -> nn.Module:
    """Gated multimodal units of `width` units (default dim) over the pooled modality vectors,
    or the width that gives about `budget` parameters."""
    return sized(
        lambda w: GatedFusion(dim=dim, modalities=modalities, width=w),
        width=width,
        budget=budget,
        default=dim,
    )
