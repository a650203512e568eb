"""The late-fusion gap: what no sum of per-modality evidence recovers, part of the synergy,
and its test against sampling noise."""

from __future__ import annotations

import numpy as np
import pytest

from omnifuse.analysis.additive import additive_fit, gap_test, late_fusion_gap
from omnifuse.analysis.pid import decompose
from tests.analysis.test_pid import KNOWN, random_tables


def noisy_copies(flip: float = 0.2) -> np.ndarray:
    """Y a uniform bit, X1 and X2 copies of it each flipped with probability `flip`,
    independently: the two are independent given Y."""
    p = np.zeros((2, 2, 2))
    for y, a, b in np.ndindex(2, 2, 2):
        p[a, b, y] = 0.5 * (flip if a != y else 1 - flip) * (flip if b != y else 1 - flip)
    return p


def test_xor_loses_everything_and_and_loses_nothing():
    assert late_fusion_gap(KNOWN["xor"][0]) == pytest.approx(1.0, abs=1e-9)
    # AND is a threshold of a + b: logits M (a + b - 1.5) reach it as M grows, so the fit
    # approaches it on the boundary (IPF: about 0.1 / iterations bits short)
    assert late_fusion_gap(KNOWN["and"][0]) < 1e-3
    for name in ("copied bit", "independent bits", "unique to the first"):
        assert late_fusion_gap(KNOWN[name][0]) == pytest.approx(0.0, abs=1e-9)


def test_conditionally_independent_views_have_synergy_but_no_gap():
    p = noisy_copies()
    assert decompose(p).synergy == pytest.approx(0.1825, abs=1e-3)
    assert late_fusion_gap(p) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("p", random_tables(5, seed=5), ids=lambda p: "x".join(map(str, p.shape)))
def test_the_gap_is_part_of_the_synergy_and_the_fit_keeps_three_margins(p: np.ndarray):
    fit = additive_fit(p, iterations=5000, tolerance=1e-12)
    for axis in range(3):
        assert fit.sum(axis) == pytest.approx(p.sum(axis), abs=1e-6)
    assert 0 <= late_fusion_gap(p) <= decompose(p).synergy + 1e-6


def sample(p: np.ndarray, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, p.ravel()).reshape(p.shape).astype(float)


def test_the_test_finds_xor_and_not_noise():
    xor = gap_test(sample(KNOWN["xor"][0], 400, 0), resamples=99, seed=0)
    assert xor.p_value == pytest.approx(0.01) and xor.value > 0.9
    # 8 x 8 x 4 cells of sources independent given the label, 300 rows: the plug-in gap is
    # all sampling noise, which the null draws reproduce
    rng = np.random.default_rng(1)
    given = rng.dirichlet(np.ones(8) * 0.5, size=(2, 4))  # p(x_i | y) per source
    p = np.einsum("y,yi,yj->ijy", np.full(4, 0.25), given[0], given[1])
    noise = gap_test(sample(p, 300, 2), resamples=99, seed=0)
    assert noise.plugin > 0.05  # what the plug-in alone would report
    assert noise.p_value > 0.05 and noise.value < noise.plugin / 3
