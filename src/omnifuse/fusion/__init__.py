"""Fusion strategies, one per file, registered by name."""

from omnifuse.fusion import (
    bottleneck,
    cross_attention,
    early,
    gmu,
    late,
    low_rank,
    perceiver,
    tensor,
    unimodal,
)
from omnifuse.fusion.base import Fused, Fusion, count_parameters, width_for_budget

__all__ = [
    "Fused",
    "Fusion",
    "bottleneck",
    "count_parameters",
    "cross_attention",
    "early",
    "gmu",
    "late",
    "low_rank",
    "perceiver",
    "tensor",
    "unimodal",
    "width_for_budget",
]
