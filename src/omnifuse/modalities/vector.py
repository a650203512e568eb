"""Precomputed embeddings: a JSON list of numbers or a .npy file per row, projected to tokens.

The vector's length must equal the configured `dim`; NaN and infinite values are errors. The
encoder layer-normalises the vector (embeddings from other models come at any scale) and
projects it to `tokens` tokens, each with a learned position.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field
from torch import Tensor, nn

from omnifuse.config import Component, ModalityConfig
from omnifuse.errors import ConfigError, DataError
from omnifuse.interfaces import Tokens
from omnifuse.modalities.base import Modality, load_npy
from omnifuse.registry import create_encoder, register_encoder, register_kind


class VectorConfig(ModalityConfig):
    """A precomputed embedding per row: a JSON list of `dim` numbers or a .npy file."""

    kind: Literal["vector"] = "vector"
    column: str | None = None
    dim: int = Field(ge=1)
    encoder: Component = Component(type="vector_projection")


@register_kind("vector", config=VectorConfig)
class VectorModality(Modality[VectorConfig]):
    def load_value(self, value: Any, root: Path) -> Tensor:
        array = self.read_numbers(
            value,
            root,
            what="vector",
            expected="a JSON list of numbers or a .npy file",
            files={".npy": self.read_npy},
        )
        self.check_shape(array.shape)
        array = array.reshape(self.config.dim)
        if not np.isfinite(array).all():
            raise DataError(f"column '{self.column}': the vector holds NaN or infinite values")
        return torch.from_numpy(array)

    def read_npy(self, path: Path) -> np.ndarray:
        """A .npy vector, memory-mapped, so a file of the wrong shape (however large) is refused
        before its values are read."""
        array = load_npy(path)
        self.check_shape(array.shape)
        return array

    def check_shape(self, shape: tuple[int, ...]) -> None:
        """(dim,), or (1, dim)."""
        if shape not in ((self.config.dim,), (1, self.config.dim)):
            raise DataError(
                f"column '{self.column}': vector of shape {tuple(shape)}, expected "
                f"({self.config.dim},) (modalities.{self.name}.dim)"
            )

    def template(self) -> Tensor:
        return torch.zeros(self.config.dim)

    def build_encoder(self, dim: int) -> nn.Module:
        encoder = self.config.encoder
        return create_encoder(encoder.type, dim=dim, features=self.config.dim, **encoder.options)


class VectorProjection(nn.Module):
    def __init__(self, *, dim: int, features: int, tokens: int) -> None:
        super().__init__()
        self.tokens = tokens
        self.norm = nn.LayerNorm(features)
        self.project = nn.Linear(features, tokens * dim)
        self.position = nn.Parameter(torch.randn(tokens, dim) * 0.02)

    def forward(self, x: Tensor, lengths: Tensor) -> Tokens:
        # x: (B, features) -> (B, tokens, D)
        tokens = self.project(self.norm(x)).unflatten(1, (self.tokens, -1)) + self.position
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=x.device)
        return Tokens(tokens, mask)


@register_encoder("vector_projection", kinds=("vector",))
def vector_projection(dim: int, features: int, *, tokens: int = 1) -> VectorProjection:
    """A layer-normalised vector of `features` numbers as `tokens` tokens."""
    if tokens < 1:
        raise ConfigError(f"vector_projection: tokens ({tokens}) must be >= 1")
    return VectorProjection(dim=dim, features=features, tokens=tokens)
