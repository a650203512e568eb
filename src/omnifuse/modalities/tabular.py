"""Tabular columns: one token per column, with learned tokens for missing and unseen values.

A row's tensor holds the standardised numeric columns (NaN where missing) followed by the
categorical columns as codes: 0 missing, 1 a value not seen in training, 2+ known values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from omnifuse.config import Component, ModalityConfig
from omnifuse.errors import DataError
from omnifuse.interfaces import Tokens
from omnifuse.layers.attention import SelfAttentionBlock
from omnifuse.manifest import Manifest
from omnifuse.modalities.base import Modality, is_missing
from omnifuse.registry import create_encoder, register_encoder, register_kind

MISSING, UNKNOWN = 0, 1


class TabularConfig(ModalityConfig):
    """Numeric and categorical columns of the manifest, one token per column."""

    kind: Literal["tabular"] = "tabular"
    numeric: list[str] = Field(default_factory=list)
    categorical: list[str] = Field(default_factory=list)
    encoder: Component = Component(type="tabular_tokens")
    stats: dict[str, tuple[float, float]] | None = None  # numeric column -> (mean, std)
    categories: dict[str, list[str]] | None = None  # categorical column -> known values

    @model_validator(mode="after")
    def _has_columns(self) -> TabularConfig:
        if not self.numeric and not self.categorical:
            raise ValueError("a tabular modality needs numeric or categorical columns")
        return self


@register_kind("tabular", config=TabularConfig)
class TabularModality(Modality[TabularConfig]):
    def columns(self) -> list[str]:
        return [*self.config.numeric, *self.config.categorical]

    def number(self, row: Mapping[str, Any], column: str) -> float:
        value = row.get(column)
        if is_missing(value):
            return math.nan
        try:
            number = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise DataError(f"column '{column}': not a number: {value!r}") from None
        if math.isinf(number):
            raise DataError(f"column '{column}': infinite value")
        return number

    def load_row(self, row: Mapping[str, Any], root: Path) -> Tensor | None:
        if all(is_missing(row.get(column)) for column in self.columns()):
            return None
        stats = self.config.stats or {}
        categories = self.config.categories or {}
        numbers = []
        for column in self.config.numeric:
            mean, std = stats.get(column, (0.0, 1.0))
            numbers.append((self.number(row, column) - mean) / std)
        codes = []
        for column in self.config.categorical:
            cell = row.get(column)
            known = categories.get(column, [])
            if is_missing(cell):
                codes.append(MISSING)
            else:
                cell = str(cell)
                codes.append(known.index(cell) + 2 if cell in known else UNKNOWN)
        return torch.tensor(numbers + codes, dtype=torch.float32)

    def fit(self, manifest: Manifest, rows: Sequence[int], *, files: int = 256) -> TabularConfig:
        stats = {}
        for column in self.config.numeric:
            numbers = manifest.readable(rows, partial(self.number, column=column))
            values = torch.tensor(numbers, dtype=torch.float64)
            values = values[~values.isnan()]
            if len(values) < 2:
                raise DataError(f"column '{column}': fewer than 2 values in the training split")
            stats[column] = (values.mean().item(), max(values.std().item(), 1e-6))
        present = [manifest.rows[i] for i in rows]
        categories = {
            column: sorted({str(r[column]) for r in present if not is_missing(r.get(column))})
            for column in self.config.categorical
        }
        return self.config.model_copy(update={"stats": stats, "categories": categories})

    def template(self) -> Tensor:
        return torch.zeros(len(self.config.numeric) + len(self.config.categorical))

    def build_encoder(self, dim: int) -> nn.Module:
        encoder = self.config.encoder
        sizes = [len((self.config.categories or {}).get(c, [])) for c in self.config.categorical]
        return create_encoder(
            encoder.type,
            dim=dim,
            numeric=len(self.config.numeric),
            categories=sizes,
            **encoder.options,
        )


class FeatureTokenizer(nn.Module):
    """One token per column: value * weight + bias for numbers, an embedding for categories."""

    def __init__(self, *, dim: int, numeric: int, categories: list[int], depth: int) -> None:
        super().__init__()
        self.numeric = numeric
        self.weight = nn.Parameter(torch.randn(numeric, dim) * 0.1)
        self.bias = nn.Parameter(torch.zeros(numeric, dim))
        self.missing = nn.Parameter(torch.randn(numeric, dim) * 0.02)
        self.embeddings = nn.ModuleList(nn.Embedding(size + 2, dim) for size in categories)
        self.column = nn.Parameter(torch.randn(numeric + len(categories), dim) * 0.02)
        self.blocks = nn.ModuleList(SelfAttentionBlock(dim=dim, heads=4) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, lengths: Tensor) -> Tokens:
        values = x[:, : self.numeric]  # (B, numeric)
        missing = values.isnan()[..., None]
        numbers = torch.nan_to_num(values)[..., None] * self.weight + self.bias
        parts = [torch.where(missing, self.missing.expand_as(numbers), numbers)]
        codes = x[:, self.numeric :].long()
        parts += [emb(codes[:, i])[:, None] for i, emb in enumerate(self.embeddings)]
        tokens = torch.cat(parts, dim=1) + self.column  # (B, columns, D)
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=x.device)
        for block in self.blocks:
            tokens = block(tokens, mask)
        return Tokens(self.norm(tokens), mask)


@register_encoder("tabular_tokens", kinds=("tabular",))
def tabular_tokens(
    dim: int, numeric: int, categories: list[int], *, depth: int = 1
) -> FeatureTokenizer:
    """Feature tokens (one per column) through `depth` transformer layers."""
    return FeatureTokenizer(dim=dim, numeric=numeric, categories=categories, depth=depth)
