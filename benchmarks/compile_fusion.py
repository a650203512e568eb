"""torch.compile against eager for the demo's Perceiver fusion: forward and backward on the
demo's token counts (image 64, text 128, audio 50, tabular 4 tokens of width 64, batch 64,
5% of tokens masked), one thread, rounds interleaved; and the first compiled step's time.

    .venv/bin/python benchmarks/compile_fusion.py [--threads 1] [--rounds 3]
"""

from __future__ import annotations

import argparse
import time

import torch

from omnifuse.interfaces import Tokens
from omnifuse.registry import create_fusion

SIZES = {"image": 64, "text": 128, "audio": 50, "tabular": 4}


def step_ms(fusion: torch.nn.Module, inputs: dict[str, Tokens], steps: int = 10) -> float:
    start = time.process_time()
    for _ in range(steps):
        fusion(inputs).tokens.sum().backward()
    return (time.process_time() - start) / steps * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    inputs = {
        name: Tokens(torch.randn(64, n, 64, requires_grad=True), torch.rand(64, n) > 0.05)
        for name, n in SIZES.items()
    }
    eager = create_fusion("perceiver", dim=64, modalities=list(SIZES), latents=16, depth=2)
    compiled = torch.compile(eager)
    start = time.perf_counter()
    compiled(inputs).tokens.sum().backward()
    print(f"first compiled step: {time.perf_counter() - start:.1f} s (wall clock)")
    for round_ in range(args.rounds):
        for name, fusion in (("eager", eager), ("compiled", compiled)):
            print(f"round {round_} {name}: {step_ms(fusion, inputs):.1f} ms per step (CPU time)")


if __name__ == "__main__":
    main()
