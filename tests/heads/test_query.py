"""The shared Perceiver IO decoder: any number of tasks' queries in one pass, each unaffected by
the others, masked fused tokens never read."""

from __future__ import annotations

import torch

from omnifuse.heads.query import QueryDecoder, QueryHead
from omnifuse.interfaces import Fused

DIM = 16


def fused(seed: int = 0) -> Fused:
    g = torch.Generator().manual_seed(seed)
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    tokens = torch.randn(3, 4, DIM, generator=g) * mask[..., None]
    return Fused(tokens, mask, tokens.mean(1))


def test_shapes_for_one_query_and_for_a_sequence_of_queries():
    torch.manual_seed(0)
    decoder = QueryDecoder(dim=DIM)
    label, sequence = QueryHead(dim=DIM, out=5), QueryHead(dim=DIM, out=7, queries=12)
    read = decoder(fused(), {"label": label.queries, "text": sequence.queries})
    assert list(read) == ["label", "text"]
    assert read["label"].shape == (3, 1, DIM) and read["text"].shape == (3, 12, DIM)
    assert label(read["label"]).shape == (3, 1, 5) and sequence(read["text"]).shape == (3, 12, 7)
    assert decoder(fused(), {}) == {}


def test_adding_a_task_leaves_the_other_tasks_unchanged():
    torch.manual_seed(0)
    decoder = QueryDecoder(dim=DIM).eval()
    first, second = torch.randn(1, DIM), torch.randn(3, DIM)
    alone = decoder(fused(), {"first": first})["first"]
    together = decoder(fused(), {"first": first, "second": second})
    torch.testing.assert_close(together["first"], alone)
    torch.testing.assert_close(together["second"], decoder(fused(), {"second": second})["second"])


def test_masked_fused_tokens_are_never_read():
    torch.manual_seed(0)
    decoder = QueryDecoder(dim=DIM).eval()
    queries = {"q": torch.randn(2, DIM)}
    x = fused()
    moved = Fused(x.tokens + 50 * (~x.mask)[..., None], x.mask, x.pooled)
    before = decoder(x, queries)["q"]
    torch.testing.assert_close(before[:2], decoder(moved, queries)["q"][:2])
    assert torch.isfinite(before).all()  # the last sample has no valid token at all


def test_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    decoder, head = QueryDecoder(dim=DIM), QueryHead(dim=DIM, out=3)
    out = head(decoder(fused(), {"t": head.queries})["t"])
    (out * torch.randn_like(out)).sum().backward()
    for name, p in [*decoder.named_parameters(), *head.named_parameters()]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name
