"""The one interface of every fusion strategy: per-modality tokens in, one fused result out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from torch import Tensor

from omnifuse.modalities.base import Tokens


@dataclass
class Fused:
    """`tokens` (B, L, D) with `mask` (B, L), and a `pooled` (B, D) summary.

    A strategy that yields only a vector returns it as a single token.
    """

    tokens: Tensor
    mask: Tensor
    pooled: Tensor


class Fusion(Protocol):
    """Reads the tokens of every modality (in sorted key order), never a masked one."""

    def __call__(self, inputs: dict[str, Tokens]) -> Fused: ...
