"""How the cost of Perceiver and early fusion grows with the number of input tokens.

    python benchmarks/fusion_complexity.py [--tokens 256,512,1024,2048] [--batch 8] [--dim 64]
                                           [--threads 2] [--attention default|math]
                                           [--json runs/fusion_complexity.json]

For each strategy (default options) and each total token count N (split evenly over two
modalities), a fresh Python process builds the fusion, measures the peak resident memory that
one forward + backward pass adds (peak RSS during the pass minus RSS before it), then times
the mean of --repeats further passes. `--attention math` forces PyTorch's reference attention,
which materialises every (N x N) attention matrix; the default lets PyTorch pick its fused
kernel, which does not. Prints a Markdown table and writes the rows as JSON.

Early fusion attends every token to every other: time grows with N^2. The Perceiver's latent
array (16 latents) reads the N inputs once: time and memory grow with N.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

STRATEGIES = ["perceiver", "early"]


def rss_mib() -> float:
    """The current resident set size."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(strategy: str, tokens: int, args: argparse.Namespace) -> dict[str, Any]:
    """One configuration, in this process: call it in a fresh one."""
    from omnifuse.fusion.base import count_parameters
    from omnifuse.interfaces import Tokens
    from omnifuse.registry import create_fusion

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    fusion = create_fusion(strategy, dim=args.dim, modalities=["a", "b"]).train()
    half = tokens // 2
    inputs = {
        name: Tokens(
            torch.randn(args.batch, n, args.dim), torch.ones(args.batch, n, dtype=torch.bool)
        )
        for name, n in (("a", half), ("b", tokens - half))
    }

    def step() -> None:
        fused = fusion(inputs)
        (fused.tokens.square().mean() + fused.pooled.square().mean()).backward()
        fusion.zero_grad(set_to_none=True)

    backend: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
    if args.attention == "math":
        from torch.nn.attention import SDPBackend, sdpa_kernel

        backend = sdpa_kernel(SDPBackend.MATH)
    with backend:
        before = rss_mib()
        step()  # the first pass: its peak is the memory a pass needs
        peak = peak_rss_mib() - before
        start = time.perf_counter()
        for _ in range(args.repeats):
            step()
        seconds = (time.perf_counter() - start) / args.repeats
    return {
        "strategy": strategy,
        "tokens": tokens,
        "ms": round(seconds * 1000, 1),
        "peak_mib": round(max(peak, 0.0), 1),
        "parameters": count_parameters(fusion),
    }


def table(rows: list[dict[str, Any]], sizes: list[int]) -> str:
    by = {(r["strategy"], r["tokens"]): r for r in rows}
    header = "| tokens N |" + "".join(f" {s} ms | {s} peak MiB |" for s in STRATEGIES)
    lines = [header, "|---|" + "---|---|" * len(STRATEGIES)]
    for n in sizes:
        cells = "".join(f" {by[s, n]['ms']:,} | {by[s, n]['peak_mib']:,} |" for s in STRATEGIES)
        lines.append(f"| {n:,} |{cells}")
    growth = []
    for s in STRATEGIES:
        first, last = by[s, sizes[0]], by[s, sizes[-1]]
        growth.append(
            f"{s}: time x{last['ms'] / first['ms']:.1f}, memory "
            f"x{last['peak_mib'] / max(first['peak_mib'], 1e-9):.1f}"
        )
    lines.append("")
    lines.append(f"N x{sizes[-1] // sizes[0]} from {sizes[0]} to {sizes[-1]}: " + "; ".join(growth))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", default="256,512,1024,2048")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--attention", choices=["default", "math"], default="default")
    parser.add_argument("--json", type=Path, default=Path("runs/fusion_complexity.json"))
    parser.add_argument("--child", nargs=2, metavar=("STRATEGY", "TOKENS"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        print(json.dumps(measure(args.child[0], int(args.child[1]), args)))
        return
    sizes = [int(n) for n in args.tokens.split(",")]
    passed = [
        f"--{key}={getattr(args, key)}"
        for key in ("batch", "dim", "threads", "repeats", "attention")
    ]
    rows = []
    for strategy in STRATEGIES:
        for n in sizes:
            command = [sys.executable, __file__, "--child", strategy, str(n), *passed]
            out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    settings = {k: getattr(args, k) for k in ("batch", "dim", "threads", "repeats", "attention")}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"settings": settings, "rows": rows}, indent=2) + "\n")
    print(table(rows, sizes))


if __name__ == "__main__":
    main()
