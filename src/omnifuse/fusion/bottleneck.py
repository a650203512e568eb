"""Attention bottlenecks (Nagrani et al., 2021, "MBT"): each modality has its own transformer
layers, and the only way information crosses between modalities is a few shared fusion
tokens. In every layer each modality's layer reads [fusion tokens; its own tokens]; the
fusion tokens that come out are averaged over the modalities present in the sample and
passed on to the next layer. Cost per layer is linear in the number of modalities.

An absent modality's update of the fusion tokens is left out of the average, so its content
is never read; a sample with no modality at all keeps the learned initial fusion tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor, nn

from omnifuse.fusion.base import batch_size, present, sized, zero_masked
from omnifuse.interfaces import Fused, Tokens
from omnifuse.layers.attention import SelfAttentionBlock, masked_mean
from omnifuse.registry import register_fusion


class BottleneckFusion(nn.Module):
    def __init__(
        self,
        *,
        dim: int,
        modalities: Sequence[str],
        bottleneck: int,
        depth: int,
        heads: int,
        width: int,
    ) -> None:
        super().__init__()
        self.width = width
        self.names = sorted(modalities)
        self.bottleneck = bottleneck
        self.fusion_tokens = nn.Parameter(torch.randn(bottleneck, dim) * 0.02)
        self.layers = nn.ModuleList(
            nn.ModuleDict(
                {
                    name: SelfAttentionBlock(dim=dim, heads=heads, mlp_width=width)
                    for name in self.names
                }
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, inputs: dict[str, Tokens]) -> Fused:
        batch = batch_size(inputs)
        f = self.fusion_tokens.expand(batch, -1, -1)  # (B, F, D)
        ones = torch.ones(batch, self.bottleneck, dtype=torch.bool, device=f.device)
        here = {name: present(inputs[name])[:, None, None] for name in self.names}  # (B, 1, 1)
        count = sum((h.to(f.dtype) for h in here.values()), torch.zeros_like(f[:, :1, :1]))
        xs = {name: inputs[name].tokens for name in self.names}
        for layer in cast(list[nn.ModuleDict], self.layers):
            updates: Tensor = torch.zeros_like(f)
            for name in self.names:
                mask = torch.cat([ones, inputs[name].mask], 1)
                out = layer[name](torch.cat([f, xs[name]], 1), mask)
                f_m, xs[name] = out[:, : self.bottleneck], out[:, self.bottleneck :]
                updates = updates + torch.where(here[name], f_m, torch.zeros_like(f_m))
            f = torch.where(count > 0, updates / count.clamp(min=1), f)
        tokens = torch.cat([f, *(xs[n] for n in self.names)], 1)
        mask = torch.cat([ones, *(inputs[n].mask for n in self.names)], 1)
        tokens = zero_masked(self.norm(tokens), mask)
        return Fused(tokens, mask, masked_mean(tokens, mask))


@register_fusion("bottleneck")
def bottleneck(
    dim: int,
    modalities: Sequence[str],
    *,
    bottleneck: int = 4,
    depth: int = 2,
    heads: int = 4,
    width: int | None = None,
    budget: int | None = None,
) -> nn.Module:
    """`bottleneck` shared fusion tokens through `depth` layers of per-modality transformer
    layers; `width` hidden units per MLP (default 2 * dim), or the width that gives about
    `budget` parameters."""
    return sized(
        lambda w: BottleneckFusion(
            dim=dim,
            modalities=modalities,
            bottleneck=bottleneck,
            depth=depth,
            heads=heads,
            width=w,
        ),
        width=width,
        budget=budget,
        default=2 * dim,
    )
