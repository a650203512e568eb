"""The interaction profile of a label by one pair of modalities: the decomposition with its
intervals and the late-fusion gap, as JSON."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omnifuse.analysis.additive import GapTest
from omnifuse.analysis.discretise import Estimate


@dataclass(frozen=True)
class PairProfile:
    """The decomposition of the target by one pair of modalities (sorted)."""

    modalities: tuple[str, str]
    estimate: Estimate
    gap: GapTest
    cells: int  # of the histogram: clusters of each (that occur) times classes

    @property
    def sparse(self) -> bool:
        """Fewer rows than cells: the plug-in estimates of synergy and of the gap read high."""
        return self.estimate.samples < self.cells

    def as_dict(self) -> dict[str, Any]:
        first, second = self.modalities
        parts, totals = self.estimate.parts, self.estimate.totals
        return {
            "modalities": list(self.modalities),
            "samples": self.estimate.samples,
            "cells": self.cells,
            "total": totals["total"].as_dict(),
            "information": {first: totals["information1"].as_dict(),
                            second: totals["information2"].as_dict()},
            "redundancy": parts["redundancy"].as_dict(),
            "unique": {first: parts["unique1"].as_dict(), second: parts["unique2"].as_dict()},
            "synergy": parts["synergy"].as_dict(),
            "share": {k: round(v, 4) for k, v in self.estimate.share.items()},
            "late_fusion_gap": self.gap.as_dict(),
        }  # fmt: skip
