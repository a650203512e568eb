"""The modality gap: how far apart an alignment task puts its modalities, and whether
centring each modality by its own centroid (then normalising again) helps retrieval.

Measured at build time on pairs of the collection (rows having both the indexed modality
and another aligned one): the distance between the two centroids of normalised embeddings;
how often a vector's nearest neighbours, among both modalities pooled, are of its own
modality (0.5 would be no gap); and cross-modal recall@10 (other i -> indexed i) without and
with centring.
"""

from __future__ import annotations

from typing import Any

import numpy as np

K = 10


def normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def centred(vectors: np.ndarray, centroid: np.ndarray | None) -> np.ndarray:
    """`vectors` less `centroid`, normalised again (unchanged without a centroid)."""
    return normalise(vectors if centroid is None else vectors - centroid)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """(Q, k) column indices of the k highest scores of each row, best first."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def recall_at_k(queries: np.ndarray, targets: np.ndarray, k: int = K) -> float:
    """How often target i is among the k nearest targets of query i."""
    found = top_k(queries @ targets.T, k) == np.arange(len(queries))[:, None]
    return float(found.any(axis=1).mean())


def own_modality_rate(a: np.ndarray, b: np.ndarray, k: int = K) -> float:
    """The share of each vector's k nearest neighbours (itself left out), among `a` and `b`
    pooled, that are of its own modality."""
    pooled = np.concatenate([a, b])
    scores = pooled @ pooled.T
    np.fill_diagonal(scores, -np.inf)
    near = top_k(scores, min(k, len(pooled) - 1))
    side = np.arange(len(pooled)) >= len(a)
    return float((side[near] == side[:, None]).mean())


def measure_gap(
    indexed: np.ndarray,
    other: np.ndarray,
    centroid_indexed: np.ndarray,
    centroid_other: np.ndarray,
) -> dict[str, Any]:
    """The gap metrics of pairs (indexed[i], other[i]), normalised embeddings; the centroids
    are those of each modality over the whole collection."""
    a, b = centred(indexed, centroid_indexed), centred(other, centroid_other)
    return {
        "pairs": len(indexed),
        "centroid_distance": float(np.linalg.norm(centroid_indexed - centroid_other)),
        "own_modality_at_10": own_modality_rate(indexed, other),
        "own_modality_at_10_centred": own_modality_rate(a, b),
        "recall_at_10": recall_at_k(other, indexed),
        "recall_at_10_centred": recall_at_k(b, a),
    }


def keep_correction(gaps: dict[str, dict[str, Any]]) -> bool:
    """Centre when it lowers no measured cross-modal recall (and there was something to
    measure)."""
    if not gaps:
        return False
    return all(g["recall_at_10_centred"] >= g["recall_at_10"] for g in gaps.values())
