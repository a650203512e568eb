"""Fusion strategies, one per file, registered by name; `base.py` holds their shared helpers."""

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

__all__ = [
    "bottleneck",
    "cross_attention",
    "early",
    "gmu",
    "late",
    "low_rank",
    "perceiver",
    "tensor",
    "unimodal",
]
