"""Text: UTF-8 bytes as tokens, and a small transformer encoder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from omnifuse.config import TextConfig
from omnifuse.errors import DataError
from omnifuse.layers.attention import SelfAttentionBlock
from omnifuse.modalities.base import Modality, Tokens
from omnifuse.registry import create_encoder, register_encoder

PAD = 0
VOCAB = 257  # byte b is token b + 1; 0 pads


def encode_bytes(text: str, max_length: int) -> Tensor:
    """Token ids of `text`: its UTF-8 bytes shifted by one, truncated to `max_length`."""
    return torch.tensor(list(text.encode("utf-8")[:max_length]), dtype=torch.long) + 1


class TextModality(Modality[TextConfig]):
    def load_value(self, value: Any, root: Path) -> Tensor:
        if not isinstance(value, str):
            raise DataError(f"column '{self.column}': expected text, got {type(value).__name__}")
        return encode_bytes(value, self.config.max_length)

    def build_encoder(self, dim: int) -> nn.Module:
        encoder = self.config.encoder
        return create_encoder(
            encoder.type, dim=dim, max_length=self.config.max_length, **encoder.options
        )


class TransformerTextEncoder(nn.Module):
    def __init__(self, *, dim: int, max_length: int, depth: int, heads: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, dim, padding_idx=PAD)
        self.position = nn.Parameter(torch.randn(max_length, dim) * 0.02)
        self.blocks = nn.ModuleList(SelfAttentionBlock(dim=dim, heads=heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, lengths: Tensor) -> Tokens:
        mask = torch.arange(x.shape[1], device=x.device) < lengths[:, None]  # (B, L)
        tokens = self.embed(x) + self.position[: x.shape[1]]
        for block in self.blocks:
            tokens = block(tokens, mask)
        return Tokens(self.norm(tokens), mask)


@register_encoder("text_transformer")
def text_transformer(
    dim: int, max_length: int, *, depth: int = 2, heads: int = 4
) -> TransformerTextEncoder:
    """Byte embeddings with learned positions through `depth` transformer layers."""
    return TransformerTextEncoder(dim=dim, max_length=max_length, depth=depth, heads=heads)
