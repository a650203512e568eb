"""The recommendation on synthetic profiles: the family follows the late-fusion gap, not the
synergy alone, and the paragraph says why with the profile's numbers."""

from __future__ import annotations

from omnifuse.analysis.additive import GapTest
from omnifuse.analysis.discretise import Estimate, Interval
from omnifuse.analysis.profile import PairProfile
from omnifuse.analysis.recommend import INTERACTION, MATERIAL, recommend
from omnifuse.registry import list_fusions


def pair(
    names: tuple[str, str],
    *,
    redundancy: float = 0.0,
    unique: tuple[float, float] = (0.0, 0.0),
    synergy: float = 0.0,
    gap: float = 0.0,
    p_value: float = 0.5,
    rows: int = 1000,
) -> PairProfile:
    def exact(value: float) -> Interval:
        return Interval(value, max(value - 0.02, 0), value + 0.02, value)

    parts = {
        "redundancy": exact(redundancy),
        "unique1": exact(unique[0]),
        "unique2": exact(unique[1]),
        "synergy": exact(synergy),
    }
    total = redundancy + sum(unique) + synergy
    totals = {
        "total": exact(total),
        "information1": exact(redundancy + unique[0]),
        "information2": exact(redundancy + unique[1]),
    }
    estimate = Estimate(parts, totals, samples=rows, resamples=100, level=0.95)
    return PairProfile(names, estimate, GapTest(gap, gap + 0.05, 0.05, p_value), cells=200)


def test_a_synergistic_pair_calls_for_interactions():
    pairs = [
        pair(("audio", "image"), synergy=0.9, gap=0.8, p_value=0.01),
        pair(("audio", "text"), redundancy=0.1),
    ]
    recommendation = recommend("synergy", 1.0, pairs)
    assert recommendation.family == "interaction"
    assert recommendation.fusions == list(INTERACTION)
    assert set(recommendation.fusions) <= set(list_fusions())
    why = recommendation.why
    assert "audio + image" in why and "0.80 bits" in why and "80%" in why
    assert "late fusion" in why and "perceiver" in why


def test_mostly_redundant_or_unique_calls_for_late_fusion():
    pairs = [
        pair(("image", "tabular"), unique=(1.3, 0.9), synergy=0.05, gap=0.01, p_value=0.3),
        pair(("audio", "image"), redundancy=0.4, unique=(0.8, 0.8), gap=0.02, p_value=0.04),
    ]
    recommendation = recommend("scene", 3.58, pairs)
    assert recommendation.family == "late" and recommendation.fusions == ["late"]
    assert "image + tabular carry 2.25" in recommendation.why  # the most informative pair
    assert "suffices" in recommendation.why


def test_synergy_that_adds_up_is_late_fusion_s():
    """Views independent given the label (AV-MNIST): BROJA synergy, but a sum of evidence
    recovers it, so the gap is near 0."""
    pairs = [pair(("audio", "image"), redundancy=1.0, unique=(0.5, 0.3), synergy=0.8, gap=0.01)]
    recommendation = recommend("digit", 3.32, pairs)
    assert recommendation.family == "late"
    assert "adds up" in recommendation.why and "0.80 bits" in recommendation.why


def test_a_gap_must_be_both_significant_and_material():
    small = MATERIAL * 2.0 * 0.9  # under MATERIAL of H = 2 bits
    assert (
        recommend("y", 2.0, [pair(("a", "b"), synergy=0.5, gap=small, p_value=0.001)]).family
        == "late"
    )
    noisy = [pair(("a", "b"), synergy=0.5, gap=0.4, p_value=0.3)]
    assert recommend("y", 2.0, noisy).family == "late"
    clear = [pair(("a", "b"), synergy=0.5, gap=0.4, p_value=0.01)]
    assert recommend("y", 2.0, clear).family == "interaction"


def test_sparse_tables_are_flagged():
    sparse = pair(("a", "b"), unique=(1.0, 0.0), rows=100)  # 100 rows, 200 cells
    assert sparse.sparse
    assert "fewer rows than cells" in recommend("y", 1.0, [sparse]).why
    assert "fewer rows than cells" not in recommend("y", 1.0, [pair(("a", "b"))]).why
