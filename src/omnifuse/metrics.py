"""Metric functions on whole evaluation sets."""

from __future__ import annotations

from collections.abc import Sequence

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


def normalise(text: str) -> str:
    """Lower case, whitespace collapsed: what exact match compares."""
    return " ".join(text.lower().split())


def bleu4(generated: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU-4 with one reference per text (sacrebleu's defaults, 13a tokens), in [0, 1]."""
    import sacrebleu

    return float(sacrebleu.corpus_bleu(list(generated), [list(references)]).score) / 100


def rouge_l(generated: Sequence[str], references: Sequence[str]) -> float:
    """Mean ROUGE-L F1 (rouge-score: lower-cased alphanumeric tokens)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"])
    scores = [
        scorer.score(ref, gen)["rougeL"].fmeasure
        for gen, ref in zip(generated, references, strict=True)
    ]
    return sum(scores) / len(scores)


def exact_match(generated: Sequence[str], references: Sequence[str]) -> float:
    same = [normalise(g) == normalise(r) for g, r in zip(generated, references, strict=True)]
    return sum(same) / len(same)


def text_metrics(generated: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """bleu4, rougeL and exact_match of generated texts against references; NaN when empty."""
    if not generated:
        return {"bleu4": float("nan"), "rougeL": float("nan"), "exact_match": float("nan")}
    return {
        "bleu4": bleu4(generated, references),
        "rougeL": rouge_l(generated, references),
        "exact_match": exact_match(generated, references),
    }
