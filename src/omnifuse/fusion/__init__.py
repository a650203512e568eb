"""Fusion strategies, one per file, registered by name."""

from omnifuse.fusion import perceiver
from omnifuse.fusion.base import Fused, Fusion

__all__ = ["Fused", "Fusion", "perceiver"]
