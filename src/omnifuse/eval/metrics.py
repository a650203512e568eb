"""Metric functions on whole evaluation sets."""

from __future__ import annotations

import torch
from torch import Tensor


def accuracy(predicted: Tensor, target: Tensor) -> float:
    return (predicted == target).float().mean().item() if len(target) else float("nan")


def confusion_matrix(predicted: Tensor, target: Tensor, classes: int) -> Tensor:
    """(classes, classes) counts; rows are true classes, columns predictions."""
    index = target * classes + predicted
    return torch.bincount(index, minlength=classes * classes).reshape(classes, classes)


def macro_f1(predicted: Tensor, target: Tensor, classes: int) -> float:
    """F1 averaged over the classes that occur in `target` or `predicted`."""
    matrix = confusion_matrix(predicted, target, classes).double()
    tp = matrix.diag()
    support, predicted_count = matrix.sum(1), matrix.sum(0)
    f1 = 2 * tp / (support + predicted_count).clamp(min=1)
    occurring = (support + predicted_count) > 0
    return f1[occurring].mean().item() if occurring.any() else float("nan")


def retrieval_ranks(queries: Tensor, candidates: Tensor) -> Tensor:
    """Rank (0 = best) of the matching candidate for each query; row i matches row i.

    Ties count against the query: a candidate scoring equal to the match ranks above it.
    """
    scores = queries @ candidates.T  # (N, N)
    correct = scores.diag()[:, None]
    return (scores >= correct).sum(1) - 1


def recall_at_k(ranks: Tensor, ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """'R@k': the share of queries whose match is among the top k, for each k (0-based ranks)."""
    return {f"R@{k}": (ranks < k).float().mean().item() for k in ks}


def median_rank(ranks: Tensor) -> float:
    """The median 1-based rank of the matches (1 = always first), as retrieval papers report
    it; the mean of the two middle ranks for an even count. NaN without queries."""
    if len(ranks) == 0:
        return float("nan")
    return (ranks.double() + 1).quantile(0.5).item()


def mean_reciprocal_rank(ranks: Tensor) -> float:
    """The mean of 1 / (1-based rank) of the matches. NaN without queries."""
    if len(ranks) == 0:
        return float("nan")
    return (1 / (ranks.double() + 1)).mean().item()


def retrieval_metrics(ranks: Tensor) -> dict[str, float]:
    """R@1, R@5, R@10, median_rank and mrr of the 0-based `ranks` of the matches."""
    return recall_at_k(ranks) | {
        "median_rank": median_rank(ranks),
        "mrr": mean_reciprocal_rank(ranks),
    }
