import math

import pytest
import torch

from omnifuse.metrics import accuracy, confusion_matrix, macro_f1, recall_at_k, retrieval_ranks
from omnifuse.tasks.alignment import clip_loss


def test_clip_loss_matches_a_hand_computation():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    scale = torch.tensor(math.log(2.0))  # logits = 2 * similarity

    # a->b: row 0 logits [2, 1.2], row 1 logits [0, 1.6]; b->a: row 0 [2, 0], row 1 [1.2, 1.6]
    def ce(logits, target):
        return -logits[target] + math.log(sum(math.exp(x) for x in logits))

    expected = (ce([2, 1.2], 0) + ce([0, 1.6], 1)) / 2 / 2 + (
        ce([2, 0], 0) + ce([1.2, 1.6], 1)
    ) / 2 / 2
    assert clip_loss(a, b, scale).item() == pytest.approx(expected, rel=1e-6)


def test_retrieval_ranks_and_recall_on_a_known_ranking():
    queries = torch.eye(3)
    # scores[q, c] = candidates[c, q]
    candidates = torch.tensor([[0.9, 0.1, 0.0], [0.95, 0.5, 0.2], [0.1, 0.6, 0.3]])
    # query 0: match 0.9, beaten by 0.95 -> rank 1; query 1: match 0.5, beaten by 0.6 -> 1;
    # query 2: match 0.3 is the best of (0.0, 0.2, 0.3) -> 0
    ranks = retrieval_ranks(queries, candidates)
    assert ranks.tolist() == [1, 1, 0]
    assert recall_at_k(ranks, (1, 2)) == {"R@1": pytest.approx(1 / 3), "R@2": 1.0}


def test_ties_count_against_the_query():
    ranks = retrieval_ranks(torch.ones(3, 2), torch.ones(3, 2))
    assert ranks.tolist() == [2, 2, 2]


def test_classification_metrics_by_hand():
    target = torch.tensor([0, 0, 1, 1, 2])
    predicted = torch.tensor([0, 1, 1, 1, 0])
    assert accuracy(predicted, target) == pytest.approx(0.6)
    assert confusion_matrix(predicted, target, 3).tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    # F1 per class: 0 -> 2*1/(2+2)=0.5, 1 -> 2*2/(2+3)=0.8, 2 -> 0
    assert macro_f1(predicted, target, 3) == pytest.approx((0.5 + 0.8 + 0.0) / 3)
