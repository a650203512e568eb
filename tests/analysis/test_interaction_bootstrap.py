"""From embeddings to the estimate: k-means codes, the histogram and the bootstrap, whose
intervals contain the known decompositions of sampled analytic cases."""

from __future__ import annotations

import numpy as np
import pytest

from omnifuse.analysis.discretise import assign, bootstrap, histogram, kmeans
from omnifuse.errors import OmnifuseError


def draws(kind: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, 2, n), rng.integers(0, 2, n)
    return {
        "xor": (a, b, a ^ b),
        "copied bit": (a, a.copy(), a.copy()),
        "independent bits": (a, b, 2 * a + b),
        "and": (a, b, a & b),
    }[kind]


TRUTH = {  # redundancy, unique1, unique2, synergy
    "xor": (0, 0, 0, 1),
    "copied bit": (1, 0, 0, 0),
    "independent bits": (0, 1, 1, 0),
    "and": (0.311278, 0, 0, 0.5),
}


@pytest.mark.parametrize("kind", sorted(TRUTH))
def test_intervals_contain_the_truth_of_sampled_cases(kind: str):
    estimate = bootstrap(*draws(kind, 1000, seed=7), resamples=40, seed=0)
    names = ("redundancy", "unique1", "unique2", "synergy")
    for name, truth in zip(names, TRUTH[kind], strict=True):
        interval = estimate.parts[name]
        assert interval.low - 1e-6 <= truth <= interval.high + 1e-6, (name, interval)
        assert interval.low <= interval.value <= interval.high
        assert abs(interval.value - truth) < 0.05
    assert estimate.samples == 1000 and estimate.resamples == 40


def test_without_resamples_the_plugin_alone():
    estimate = bootstrap(*draws("xor", 200, seed=1), resamples=0)
    synergy = estimate.parts["synergy"]
    assert synergy.value == synergy.low == synergy.high == synergy.plugin > 0.9


def test_kmeans_finds_separated_clusters_and_assigns_new_rows():
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [10, 0], [0, 10]], dtype=float)
    truth = rng.integers(0, 3, 300)
    points = centres[truth] + rng.normal(0, 0.5, (300, 2))
    centroids = kmeans(points, 3, seed=0)
    codes = assign(points, centroids)
    # one code per true cluster, the same for all its points
    assert len({(t, c) for t, c in zip(truth, codes, strict=True)}) == 3
    fresh = assign(centres, centroids)
    assert sorted(fresh) == [0, 1, 2]
    assert len(kmeans(np.ones((5, 2)), 3, seed=0)) == 1  # no more clusters than distinct rows
    with pytest.raises(OmnifuseError):
        kmeans(np.zeros((0, 2)), 3, seed=0)


def test_histogram_counts_rows():
    counts = histogram(np.array([0, 0, 1]), np.array([1, 1, 0]), np.array([2, 2, 0]), (2, 2, 3))
    assert counts[0, 1, 2] == 2 and counts[1, 0, 0] == 1 and counts.sum() == 3


def test_clusters_are_capped_to_leave_a_row_per_cell():
    from omnifuse.analysis.analyze import usable_clusters

    assert usable_clusters(12, rows=551, classes=2) == 12  # 12 * 12 * 2 = 288 cells
    assert usable_clusters(12, rows=551, classes=12) == 6  # 6 * 6 * 12 = 432 <= 551
    assert usable_clusters(12, rows=300, classes=12) == 5
    assert usable_clusters(12, rows=10, classes=12) == 2  # never fewer than 2
