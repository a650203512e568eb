"""An autoregressive text decoder that reads the fused tokens, and the searches that run it.

`TextDecoder` is a small GPT-style decoder: token embeddings plus learned positions, then
pre-norm blocks of causal self-attention, cross-attention to the fused tokens (Perceiver IO
style: the text positions are the queries) and an MLP; the output layer is tied to the token
embedding. The searches (`greedy`, `sample`, `beam_search`) know nothing of the model: they
call `next_logits(prefix, rows)`, which gives the next-token logits (N, V) after the prefixes
(N, T) of batch samples `rows` (N,), a sample repeating once per beam.

    decoder = TextDecoder(dim=64, vocab_size=259, max_length=32, depth=2, heads=4)
    logits = decoder(ids, fused)                                   # (B, T, V)
    ids = beam_search(next_logits, size=8, tokens=Special(bos=257, eos=258), max_length=32)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from omnifuse.interfaces import Fused
from omnifuse.layers.attention import DecoderBlock

PAD = 0
# next-token logits (N, V) after prefixes (N, T) of batch samples `rows` (N,), a sample
# repeating once per beam; what the model gives `Task.generate`
NextLogits = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class Special:
    """The ids that start and end a generated text (0 pads)."""

    bos: int
    eos: int


class TextDecoder(nn.Module):
    """Next-token logits for every position of `ids` (B, T), reading `fused` through
    cross-attention. Sequences are at most `max_length` tokens long."""

    def __init__(self, *, dim: int, vocab_size: int, max_length: int, depth: int, heads: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim)
        self.position = nn.Parameter(torch.randn(max_length, dim) * 0.02)
        nn.init.normal_(self.embed.weight, std=0.02)
        self.blocks = nn.ModuleList(DecoderBlock(dim=dim, heads=heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, ids: Tensor, fused: Fused) -> Tensor:
        x = self.embed(ids) + self.position[: ids.shape[1]]  # (B, T, D)
        for block in self.blocks:
            x = block(x, fused.tokens, fused.mask)
        return self.norm(x) @ self.embed.weight.T  # (B, T, V), tied to the embedding


def allowed(logits: Tensor, tokens: Special) -> Tensor:
    """Logits with padding and the start token made impossible: only text or the end."""
    logits = logits.clone()
    logits[:, [PAD, tokens.bos]] = float("-inf")
    return logits


def greedy(next_logits: NextLogits, size: int, tokens: Special, max_length: int) -> Tensor:
    """The most probable token at each step; (size, max_length), the end token included and
    zeros after it."""
    return _one_path(next_logits, size, tokens, max_length, lambda logits: logits.argmax(-1))


def sample(
    next_logits: NextLogits, size: int, tokens: Special, max_length: int, temperature: float
) -> Tensor:
    """Each token drawn from softmax(logits / temperature), with torch's global RNG (seeding
    torch makes it reproducible); (size, max_length) as `greedy`."""

    def draw(logits: Tensor) -> Tensor:
        return torch.multinomial((logits / temperature).softmax(-1), 1)[:, 0]

    return _one_path(next_logits, size, tokens, max_length, draw)


def _one_path(
    next_logits: NextLogits,
    size: int,
    tokens: Special,
    max_length: int,
    choose: Callable[[Tensor], Tensor],
) -> Tensor:
    out = torch.zeros(size, max_length, dtype=torch.long)
    prefix = torch.full((size, 1), tokens.bos, dtype=torch.long)
    active = torch.arange(size)  # samples that have not ended yet
    for t in range(max_length):
        logits = allowed(next_logits(prefix[active], active), tokens)
        chosen = choose(logits).cpu()
        out[active, t] = chosen
        prefix = torch.cat([prefix, out[:, t : t + 1]], 1)
        active = active[chosen != tokens.eos]
        if len(active) == 0:
            break
    return out


@dataclass
class _Beam:
    score: float  # summed log-probability of the generated tokens
    ids: list[int]  # generated so far, after the start token


def beam_search(
    next_logits: NextLogits, size: int, tokens: Special, max_length: int, beam_size: int
) -> Tensor:
    """Per-sample beam search; (size, max_length) as `greedy`.

    Each sample keeps `beam_size` live beams. At each step every live beam is extended by
    every token; of the 2 * beam_size best extensions by summed log-probability, an ending
    counts only among the first beam_size (so beam_size 1 is exactly greedy) and is kept as
    a finished hypothesis; the best others become the live beams. A sample stops once it has
    beam_size finished hypotheses or reaches `max_length`; its output is the hypothesis (live
    beams included at `max_length`) with the best length-normalised log-probability (summed
    log-probability over the number of tokens, the end token counted).
    """
    live: list[list[_Beam]] = [[_Beam(0.0, [])] for _ in range(size)]
    finished: list[list[_Beam]] = [[] for _ in range(size)]
    for _ in range(max_length):
        searching = [i for i in range(size) if live[i] and len(finished[i]) < beam_size]
        if not searching:
            break
        beams = [(i, beam) for i in searching for beam in live[i]]
        rows = torch.tensor([i for i, _ in beams])
        prefix = torch.tensor([[tokens.bos, *beam.ids] for _, beam in beams], dtype=torch.long)
        logp = allowed(next_logits(prefix, rows), tokens).log_softmax(-1).cpu()  # (N, V)
        vocab = logp.shape[1]
        start = 0
        for i in searching:
            count = len(live[i])
            scores = torch.tensor([b.score for b in live[i]])[:, None] + logp[start : start + count]
            best = scores.flatten().topk(min(2 * beam_size, scores.numel()))
            extended: list[_Beam] = []
            for rank, (value, index) in enumerate(
                zip(best.values.tolist(), best.indices.tolist(), strict=True)
            ):
                if value == float("-inf") or len(extended) == beam_size:
                    break
                beam, token = live[i][index // vocab], index % vocab
                if token == tokens.eos:
                    if rank < beam_size:
                        finished[i].append(_Beam(value, [*beam.ids, token]))
                else:
                    extended.append(_Beam(value, [*beam.ids, token]))
            live[i] = extended
            start += count
    out = torch.zeros(size, max_length, dtype=torch.long)
    for i in range(size):
        # live beams are complete only for a sample that reached max_length still searching
        hypotheses = finished[i] + (live[i] if len(finished[i]) < beam_size else [])
        if not hypotheses:
            continue
        chosen = max(hypotheses, key=lambda beam: beam.score / max(len(beam.ids), 1))
        out[i, : len(chosen.ids)] = torch.tensor(chosen.ids, dtype=torch.long)
    return out
