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
        cross_heads: int,
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
        self.cross = CrossAttentionBlock(dim=dim, heads=cross_heads, mlp_width=width)
        self.blocks = nn.ModuleList(
            SelfAttentionBlock(dim=dim, heads=heads, mlp_width=width) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, inputs: dict[str, Tokens]) -> Fused:
        batch = batch_size(inputs)
        names = sorted(inputs)
        tokens = torch.cat([self.null.expand(batch, 1, -1), *(inputs[n].tokens for n in names)], 1)
        # each token plus its modality's embedding (the null token's is 0), added after the
        # concatenation as one (1, M, D) table: its gradient is then a sum over a contiguous
        # batch axis, not over a strided slice of the context's (25x slower on the CPU)
        embedding = torch.cat(
            [
                torch.zeros_like(self.null)[None],
                *(self.modality[n].expand(1, inputs[n].tokens.shape[1], -1) for n in names),
            ],
            1,
        )
        context_tokens = tokens + embedding  # (B, M, D)
        masks = [torch.ones(batch, 1, dtype=torch.bool, device=self.null.device)]
        context_mask = torch.cat([*masks, *(inputs[n].mask for n in names)], 1)
        # no mask when every token is valid: the same attention, on SDPA's fastest kernel
        valid = None if bool(context_mask.all()) else context_mask
        latents = self.cross(self.latents.expand(batch, -1, -1), context_tokens, valid)
        for block in self.blocks:
            latents = block(latents, None)  # latents are always valid
        all_latents = torch.ones(latents.shape[:2], dtype=torch.bool, device=latents.device)
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
    cross_heads: int | None = None,
    width: int | None = None,
    budget: int | None = None,
) -> nn.Module:
    """A latent array of `latents` tokens, one cross-attention of `cross_heads` heads (default
    `heads`; the Perceiver paper and Hugging Face's use 1), `depth` latent self-attentions of
    `heads` heads; `width` hidden units per MLP (default 2 * dim), or the width that gives
    about `budget` parameters."""
    return sized(
        lambda w: PerceiverFusion(
            dim=dim,
            modalities=modalities,
            latents=latents,
            depth=depth,
            heads=heads,
            cross_heads=cross_heads or heads,
            width=w,
        ),
        width=width,
        budget=budget,
        default=2 * dim,
    )
