"""The LeNet encoder's convolutions channels-last (as built) against the plain layout, one
training step (forward and backward) on a batch of grey images at AV-MNIST's sizes.

    PYTHONPATH=src python benchmarks/lenet_layout.py --threads 2 [--batch 64] [--steps 10]

Both layouts are timed side by side in one process, alternating, with the same weights; the
ratio is the figure to read (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from torch import nn

from omnifuse.registry import create_encoder

SIZES = ((28, 3), (56, 4), (112, 5))  # (pixels, stages): 3 x 3 tokens each


def step_ms(encoder: nn.Module, x: torch.Tensor, lengths: torch.Tensor) -> float:
    start = time.perf_counter()
    encoder(x, lengths).tokens.square().mean().backward()
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print("| image | stages | channels-last ms/step | plain ms/step | speed-up |")
    print("|---|---|---|---|---|")
    for size, stages in SIZES:
        built = create_encoder("image_lenet", dim=64, size=size, channels=1, stages=stages)
        plain = copy.deepcopy(built)
        plain.stem.to(memory_format=torch.contiguous_format)  # a 1-channel input is both
        x, lengths = torch.randn(args.batch, 1, size, size), torch.full((args.batch,), size)
        times: dict[str, list[float]] = {"built": [], "plain": []}
        for i in range(args.steps + 2):  # two warm-up steps of each, then alternate
            for name, encoder in (("built", built), ("plain", plain)):
                ms = step_ms(encoder.train(), x, lengths)
                if i >= 2:
                    times[name].append(ms)
        fast, slow = (sorted(times[k])[len(times[k]) // 2] for k in ("built", "plain"))
        print(f"| {size} px | {stages} | {fast:.1f} | {slow:.1f} | {slow / fast:.2f}x |")


if __name__ == "__main__":
    main()
