"""Perceiver fusion (Jaegle et al., 2021): a latent array cross-attends to all modality tokens,
then refines itself with latent self-attention. Cost grows linearly with the number of inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from omnifuse.fusion.base import batch_size, sized
from omnifuse.interfaces import Fused, Tokens
from omnifuse.layers.attention import CrossAttentionBlock, SelfAttentionBlock
from omnifuse.registry import register_fusion


class PerceiverFusion(nn.Module):
    def __init__(
        self,
        *,
        dim: int,
        modalities: Sequence[str],
        latents: int,
        depth: int,
        heads: int,
        width: int,
    ) -> None:
        super().__init__()
        self.width = width
        self.latents = nn.Parameter(torch.randn(latents, dim) * 0.02)
        self.modality = nn.ParameterDict(
            {name: nn.Parameter(torch.randn(dim) * 0.02) for name in sorted(modalities)}
        )
        # Always valid, so a sample lacking every modality still has a key to attend to.
        self.null = nn.Parameter(torch.randn(1, dim) * 0.02)
        self.cross = CrossAttentionBlock(dim=dim, heads=heads, mlp_width=width)
        self.blocks = nn.ModuleList(
            SelfAttentionBlock(dim=dim, heads=heads, mlp_width=width) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, inputs: dict[str, Tokens]) -> Fused:
        batch = batch_size(inputs)
        context = [self.null.expand(batch, 1, -1)]
        masks = [torch.ones(batch, 1, dtype=torch.bool, device=self.null.device)]
        for name in sorted(inputs):
            context.append(inputs[name].tokens + self.modality[name])
            masks.append(inputs[name].mask)
        context_tokens, context_mask = torch.cat(context, 1), torch.cat(masks, 1)  # (B, M, D)
        latents = self.cross(self.latents.expand(batch, -1, -1), context_tokens, context_mask)
        all_latents = torch.ones(latents.shape[:2], dtype=torch.bool, device=latents.device)
        for block in self.blocks:
            latents = block(latents, all_latents)
        latents = self.norm(latents)
        return Fused(latents, all_latents, latents.mean(1))


@register_fusion("perceiver")
def perceiver(
    dim: int,
    modalities: Sequence[str],
    *,
    latents: int = 16,
    depth: int = 2,
    heads: int = 4,
    width: int | None = None,
    budget: int | None = None,
) -> nn.Module:
    """A latent array of `latents` tokens, one cross-attention, `depth` latent self-attentions;
    `width` hidden units per MLP (default 2 * dim), or the width that gives about `budget`
    parameters."""
    return sized(
        lambda w: PerceiverFusion(
            dim=dim, modalities=modalities, latents=latents, depth=depth, heads=heads, width=w
        ),
        width=width,
        budget=budget,
        default=2 * dim,
    )
