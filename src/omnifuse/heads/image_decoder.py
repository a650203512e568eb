"""A transformer over an image's discrete codes that reads the fused tokens, and its decodings.

`CodeTransformer` embeds a sequence of codes (one per cell of a tokenizer's grid, in raster
order) plus learned positions, then runs pre-norm blocks of self-attention, cross-attention
to the fused tokens (the code positions are the queries, as in Perceiver IO and Muse) and an
MLP, and predicts every position's code. One extra id, `special` (= the codebook size), is
the [MASK] token of parallel decoding or the start token of autoregressive decoding.

Two ways to generate, each matching how the transformer was trained:

- `parallel_decode` (MaskGIT, Chang et al. 2022; Muse, Chang et al. 2023): bidirectional
  attention; start from all positions masked, and at each of `steps` steps sample every
  masked position, keep the most confident samples and mask the rest again, so that after
  step t a share cos(pi/2 * (t+1)/steps) of the positions is still masked (`masked_after`):
  few tokens are revealed first, many at the end, and all after the last step.
- `autoregressive_decode`: causal attention, one code at a time in raster order.

Both call `logits(ids)` -> (B, N, V), the (guided) logits for every position of `ids`
(B, N), and draw with the `torch.Generator` they are given: the same seed gives the same
codes.

    transformer = CodeTransformer(dim=64, vocab=1000, length=64, depth=2, heads=4)
    logits = transformer(ids, fused)                                        # (B, 64, 1000)
    codes = parallel_decode(lambda ids: transformer(ids, fused), size=B, length=64,
                            vocab=1000, steps=8, temperature=1.0, generator=generator)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from omnifuse.interfaces import Fused
from omnifuse.layers.attention import Attention
from omnifuse.layers.mlp import MLP

Logits = Callable[[Tensor], Tensor]  # ids (B, N) -> logits (B, N, V)


class CodeBlock(nn.Module):
    """Self-attention over the codes (causal or not), cross-attention to the fused tokens
    (masked), an MLP; pre-norm, all residual."""

    def __init__(self, *, dim: int, heads: int, causal: bool) -> None:
        super().__init__()
        self.causal = causal
        self.norm = nn.LayerNorm(dim)
        self.attn = Attention(dim=dim, heads=heads)
        self.norm_q, self.norm_c = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.cross = Attention(dim=dim, heads=heads)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = MLP(dim=dim, hidden=4 * dim)

    def forward(self, x: Tensor, context: Tensor, mask: Tensor) -> Tensor:
        h = self.norm(x)
        x = x + self.attn(h, h, None, causal=self.causal)
        x = x + self.cross(self.norm_q(x), self.norm_c(context), mask)
        return x + self.mlp(self.norm_mlp(x))


class CodeTransformer(nn.Module):
    """Logits over `vocab` codes for each of up to `length` positions, reading `fused`."""

    def __init__(
        self, *, dim: int, vocab: int, length: int, depth: int, heads: int, causal: bool = False
    ) -> None:
        super().__init__()
        self.vocab, self.length, self.causal = vocab, length, causal
        self.special = vocab  # [MASK] (parallel) or the start token (autoregressive)
        self.embed = nn.Embedding(vocab + 1, dim)
        nn.init.normal_(self.embed.weight, std=0.02)
        self.position = nn.Parameter(torch.randn(length, dim) * 0.02)
        self.blocks = nn.ModuleList(
            CodeBlock(dim=dim, heads=heads, causal=causal) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, vocab)

    def forward(self, ids: Tensor, fused: Fused) -> Tensor:
        x = self.embed(ids) + self.position[: ids.shape[1]]  # (B, N, D)
        for block in self.blocks:
            x = block(x, fused.tokens, fused.mask)
        return self.out(self.norm(x))  # (B, N, V)


def masked_after(length: int, steps: int) -> list[int]:
    """How many of `length` positions are still masked after each decoding step: the cosine
    schedule floor(length * cos(pi/2 * (t+1)/steps)), at least one fewer every step, 0 at the
    end. `steps` is at most `length`."""
    steps = max(1, min(steps, length))
    left, schedule = length, []
    for t in range(steps):
        masked = math.floor(length * math.cos(math.pi / 2 * (t + 1) / steps))
        left = max(0, min(left - 1, masked)) if t < steps - 1 else 0
        schedule.append(left)
    return schedule


def revealed_per_step(length: int, steps: int) -> list[int]:
    """How many positions each decoding step reveals (they sum to `length`)."""
    schedule = masked_after(length, steps)
    return [before - after for before, after in zip([length, *schedule], schedule, strict=False)]


def draw(logits: Tensor, temperature: float, generator: torch.Generator) -> Tensor:
    """Codes (B, N) drawn from softmax(logits / temperature), or their argmax at temperature 0."""
    if temperature <= 0:
        return logits.argmax(-1)
    probs = (logits.float() / temperature).softmax(-1)
    flat = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=generator)
    return flat.reshape(probs.shape[:-1])


@torch.no_grad()
def parallel_decode(
    logits: Logits,
    *,
    size: int,
    length: int,
    vocab: int,
    steps: int,
    temperature: float,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
    choice_temperature: float = 1.0,
) -> Tensor:
    """Codes (size, length) by iterative parallel decoding with the cosine schedule. A masked
    position's confidence is the log-probability of the code drawn for it, plus Gumbel noise
    scaled by `choice_temperature` and annealed to 0 over the steps (MaskGIT), so that which
    positions are revealed first varies from sample to sample."""
    mask_id = vocab
    codes = torch.full((size, length), mask_id, dtype=torch.long, device=device)
    schedule = masked_after(length, steps)
    for t, still_masked in enumerate(schedule):
        step = logits(codes)  # (B, N, V)
        drawn = draw(step, temperature, generator)
        unknown = codes == mask_id
        drawn = torch.where(unknown, drawn, codes)
        if still_masked == 0:
            return drawn
        confidence = step.float().log_softmax(-1).gather(-1, drawn[..., None])[..., 0]
        uniform = torch.rand(confidence.shape, generator=generator, device=generator.device)
        gumbel = -torch.log(-torch.log(uniform.to(confidence.device).clamp(1e-20, 1 - 1e-7)))
        anneal = choice_temperature * (1 - (t + 1) / len(schedule))
        confidence = torch.where(unknown, confidence + anneal * gumbel, torch.inf)
        # the `still_masked` least confident positions are masked again
        lowest = confidence.topk(still_masked, dim=-1, largest=False).indices
        codes = drawn.scatter(1, lowest, mask_id)
    return codes


@torch.no_grad()
def autoregressive_decode(
    logits: Logits,
    *,
    size: int,
    length: int,
    vocab: int,
    temperature: float,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Codes (size, length), one position at a time after the start token (id `vocab`)."""
    ids = torch.full((size, 1), vocab, dtype=torch.long, device=device)
    for _ in range(length):
        step = logits(ids)[:, -1:]  # (B, 1, V)
        ids = torch.cat([ids, draw(step, temperature, generator)], 1)
    return ids[:, 1:]
