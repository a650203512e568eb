"""The code transformer's decodings: the cosine masking schedule, seeds, causality."""

from __future__ import annotations

import math

import pytest
import torch

from omnifuse.heads.image_decoder import (
    CodeTransformer,
    autoregressive_decode,
    masked_after,
    parallel_decode,
    revealed_per_step,
)
from omnifuse.interfaces import Fused


@pytest.mark.parametrize(("length", "steps"), [(64, 8), (16, 4), (49, 12), (5, 10), (64, 1)])
def test_the_schedule_is_cosine_and_ends_with_all_revealed(length: int, steps: int):
    schedule = masked_after(length, steps)
    assert schedule[-1] == 0
    assert all(a > b for a, b in zip([length, *schedule], schedule, strict=False))
    revealed = revealed_per_step(length, steps)
    assert sum(revealed) == length and all(r >= 1 for r in revealed)
    for t, masked in enumerate(schedule[:-1]):
        cosine = math.floor(length * math.cos(math.pi / 2 * (t + 1) / len(schedule)))
        previous = schedule[t - 1] if t else length
        # the cosine share, or one fewer than before where the cosine would stall
        assert masked == min(cosine, previous - 1)


def test_few_tokens_are_revealed_first_and_many_at_the_end():
    revealed = revealed_per_step(64, 8)
    assert revealed[0] < revealed[len(revealed) // 2]


class Counting:
    """Fake logits that record how many masked positions each call sees."""

    def __init__(self, vocab: int) -> None:
        self.vocab, self.masked = vocab, []

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        self.masked.append(int((ids == self.vocab).sum(1)[0]))
        return torch.randn(*ids.shape, self.vocab, generator=torch.Generator().manual_seed(3))


def test_parallel_decoding_reveals_tokens_on_the_schedule():
    logits = Counting(vocab=10)
    generator = torch.Generator().manual_seed(0)
    codes = parallel_decode(
        logits, size=3, length=64, vocab=10, steps=8, temperature=1.0, generator=generator
    )
    assert codes.shape == (3, 64) and codes.max() < 10 and codes.min() >= 0
    assert logits.masked == [64, *masked_after(64, 8)[:-1]]


def tiny_transformer(causal: bool) -> tuple[CodeTransformer, Fused]:
    torch.manual_seed(0)
    transformer = CodeTransformer(dim=16, vocab=12, length=9, depth=1, heads=2, causal=causal)
    fused = Fused(torch.randn(2, 3, 16), torch.ones(2, 3, dtype=torch.bool), torch.randn(2, 16))
    return transformer.eval(), fused


@pytest.mark.parametrize("causal", [False, True])
def test_the_same_seed_gives_the_same_codes(causal: bool):
    transformer, fused = tiny_transformer(causal)

    def run(seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        options = {"size": 2, "length": 9, "vocab": 12, "temperature": 1.0, "generator": generator}
        if causal:
            return autoregressive_decode(lambda ids: transformer(ids, fused), **options)
        return parallel_decode(lambda ids: transformer(ids, fused), steps=4, **options)

    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))


def test_a_causal_transformer_never_reads_ahead():
    transformer, fused = tiny_transformer(causal=True)
    ids = torch.randint(0, 12, (2, 9))
    changed = ids.clone()
    changed[:, 5:] = (changed[:, 5:] + 1) % 12
    torch.testing.assert_close(transformer(ids, fused)[:, :5], transformer(changed, fused)[:, :5])
