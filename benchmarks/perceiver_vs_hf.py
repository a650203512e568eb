"""omnifuse's Perceiver fusion against Hugging Face's `PerceiverModel` at the same work.

    python benchmarks/perceiver_vs_hf.py [--tokens 256 512 1024 2048] [--rounds 3] [--threads 2]

Both: batch 32 of n input tokens of width 256, 64 latents of 256, one cross-attention with 1
head, 4 latent self-attentions with 8 heads, MLPs of width 256 (HF's widening factor 1), the
latents' mean to a 10-class linear head, cross-entropy and an AdamW step. Rounds interleave
the two models at every n; prints one JSON line per n: samples/s of each (the best round)
and omnifuse / HF.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from omnifuse.fusion.perceiver import PerceiverFusion
from omnifuse.interfaces import Tokens

BATCH, WIDTH, LATENTS, CLASSES = 32, 256, 64, 10


class Omnifuse(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fusion = PerceiverFusion(
            dim=WIDTH,
            modalities=["x"],
            latents=LATENTS,
            depth=4,
            heads=8,
            cross_heads=1,
            width=WIDTH,
        )
        self.head = nn.Linear(WIDTH, CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        mask = torch.ones(x.shape[:2], dtype=torch.bool)
        return self.head(self.fusion({"x": Tokens(x, mask)}).pooled)


class HuggingFace(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        from transformers import PerceiverConfig, PerceiverModel

        config = PerceiverConfig(
            num_latents=LATENTS,
            d_latents=WIDTH,
            d_model=WIDTH,
            num_blocks=1,
            num_self_attends_per_block=4,
            num_self_attention_heads=8,
            num_cross_attention_heads=1,
            cross_attention_widening_factor=1,
            self_attention_widening_factor=1,
        )
        self.perceiver = PerceiverModel(config)
        self.head = nn.Linear(WIDTH, CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.perceiver(inputs=x).last_hidden_state.mean(1))


def samples_per_second(model: nn.Module, tokens: int, steps: int) -> float:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(BATCH, tokens, WIDTH)
    y = torch.randint(0, CLASSES, (BATCH,))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return BATCH * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[256, 512, 1024, 2048])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    models: dict[str, Callable[[], nn.Module]] = {"omnifuse": Omnifuse, "hf": HuggingFace}
    built = {name: make() for name, make in models.items()}
    for tokens in args.tokens:
        best = {name: 0.0 for name in built}
        for _ in range(args.rounds):
            for name, model in built.items():
                best[name] = max(best[name], samples_per_second(model, tokens, args.steps))
        line = {"tokens": tokens, "threads": args.threads} | {
            f"{name}_samples_per_s": round(rate, 1) for name, rate in best.items()
        }
        print(json.dumps(line | {"ratio": round(best["omnifuse"] / best["hf"], 3)}), flush=True)


if __name__ == "__main__":
    main()
