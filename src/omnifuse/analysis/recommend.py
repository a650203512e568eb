"""From an interaction profile to a family of fusion strategies, and why, in one paragraph.

    recommendation = recommend("synergy", 1.0, pairs)
    recommendation.family        # "late" | "interaction"
    recommendation.fusions       # fusion types, in order of preference
    recommendation.why           # the paragraph

Late fusion sums per-modality evidence (it averages per-modality logits), so what it can
never represent is exactly the late-fusion gap: the information about the label that no sum
a(x1, y) + b(x2, y) recovers (`additive`). The gap is part of the synergy, but not all of it:
two observations that are independent given the label (AV-MNIST's image and audio) have
BROJA synergy, and their evidence still adds up. So the family is "interaction" when some
pair's gap, net of what sampling noise alone produces, is both clearly there (p-value at most
SIGNIFICANCE) and material (at least MATERIAL of the label's entropy); otherwise "late".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from omnifuse.analysis.profile import PairProfile
from omnifuse.registry import list_fusions

# preference order, from the fusion benchmark on the world's `pattern XOR hum`
# (docs/benchmarks.md: Perceiver 0.971, early 0.958, cross-attention 0.964; late 0.510)
INTERACTION = ("perceiver", "early", "cross_attention")
LATE = ("late",)
MATERIAL = 0.05  # share of H(Y) that late fusion would have to lose
SIGNIFICANCE = 0.05


@dataclass(frozen=True)
class Recommendation:
    family: Literal["late", "interaction"]
    fusions: list[str]
    why: str

    def as_dict(self) -> dict[str, Any]:
        return {"family": self.family, "fusions": self.fusions, "why": self.why}


def _bits(value: float) -> str:
    return f"{value:.2f} bits"


def _interval(pair: PairProfile, part: str) -> str:
    found = pair.estimate.parts.get(part) or pair.estimate.totals[part]
    if pair.estimate.resamples == 0:
        return f"{found.value:.2f}"
    return f"{found.value:.2f} [{found.low:.2f}, {found.high:.2f}]"


def _describe(pair: PairProfile) -> str:
    """'a + b carry T [lo, hi] bits about it: R redundant, U1 unique to a, U2 unique to b and
    S synergistic'."""
    first, second = pair.modalities
    parts = pair.estimate.parts
    return (
        f"{first} + {second} carry {_interval(pair, 'total')} bits about it: "
        f"{parts['redundancy'].value:.2f} redundant, {parts['unique1'].value:.2f} unique to "
        f"{first}, {parts['unique2'].value:.2f} unique to {second} and "
        f"{parts['synergy'].value:.2f} synergistic"
    )


def _p(gap: float) -> str:
    return "p < 0.01" if gap < 0.01 else f"p = {gap:.2f}"


def interacting(pair: PairProfile, entropy: float) -> bool:
    """Whether late fusion would lose a clear and material part of the label's information
    on this pair."""
    gap = pair.gap
    significant = gap.p_value != gap.p_value or gap.p_value <= SIGNIFICANCE  # NaN: untested
    return significant and gap.value >= MATERIAL * entropy and gap.value > 0


def recommend(task: str, entropy: float, pairs: Sequence[PairProfile]) -> Recommendation:
    """The family and strategies the profile of `task` (label entropy `entropy` bits) calls
    for, with the paragraph that says why."""
    widest = max(pairs, key=lambda p: p.gap.value)  # where late fusion loses the most
    richest = max(pairs, key=lambda p: p.estimate.totals["total"].value)
    synergistic = max(pairs, key=lambda p: p.estimate.parts["synergy"].value)
    share = widest.gap.value / entropy if entropy > 0 else 0.0
    known = set(list_fusions())
    head = f"The label {task} has {_bits(entropy)} of entropy."
    rows = max(p.estimate.samples for p in pairs)
    caveat = (
        f" (Estimated on up to {rows} held-out rows; information the encoders did not learn "
        f"to extract is not counted."
    )
    sparse = [p for p in pairs if p.sparse]
    if sparse:
        caveat += (
            f" {len(sparse)} of the {len(pairs)} tables have fewer rows than cells, so their "
            f"synergy and gap read high: use more held-out rows or fewer clusters."
        )
    caveat += ")"
    if interacting(widest, entropy):
        fusions = [f for f in INTERACTION if f in known]
        first, second = widest.modalities
        why = (
            f"{head} {_describe(widest)}. Of its synergy, {_bits(widest.gap.value)} "
            f"({_p(widest.gap.p_value)}, net of sampling noise) cannot be recovered by adding "
            f"up evidence from {first} and from {second} separately, which is all late fusion "
            f"does: it would lose about {share:.0%} of what the label holds. The modalities "
            f"interact, so choose a strategy that models interactions: "
            f"{', '.join(fusions)}.{caveat}"
        )
        return Recommendation("interaction", fusions, why)
    why = f"{head} The most informative pair: {_describe(richest)}."
    if synergistic.estimate.parts["synergy"].value >= MATERIAL * entropy:
        why += (
            f" The largest synergy ({_bits(synergistic.estimate.parts['synergy'].value)}, "
            f"{' + '.join(synergistic.modalities)}) is evidence that adds up (as from two "
            f"views independent given the label) or sampling noise: a sum of per-modality "
            f"evidence recovers all but {_bits(synergistic.gap.value)} of it."
        )
    why += (
        f" On every pair, late fusion, which sums per-modality evidence, loses at most "
        f"{_bits(widest.gap.value)} ({share:.1%} of the label's entropy, "
        f"{' + '.join(widest.modalities)}), so it suffices; strategies that model "
        f"interactions cost more and have nothing more to find here.{caveat}"
    )
    return Recommendation("late", [f for f in LATE if f in known], why)
