"""This machine's matrix-multiply peak: the FLOP/s that model FLOPs utilisation is measured
against.

    python benchmarks/matmul_peak.py [--threads 2] [--sizes 512,1024,2048,4096] [--repeats 5]
                                     [--device cpu|cuda] [--json runs/matmul_peak.json]

For each size n, the best of --repeats timings of one float32 (n x n) @ (n x n) `torch.mm`
after a warm-up, as 2 n^3 / seconds. The peak is the largest over the sizes. `omnifuse bench`
measures the same in process (n = 2048, best of 5) and records it in results.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from omnifuse.bench.cost import matmul_peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sizes", default="512,1024,2048,4096")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, default=Path("runs/matmul_peak.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        row = matmul_peak(size=size, repeats=args.repeats, device=args.device)
        rows.append(row)
        print(
            f"n = {size:>5}: {row['flops_per_s'] / 1e9:8.1f} GFLOP/s "
            f"({row['seconds'] * 1e3:.1f} ms)"
        )
    best = max(rows, key=lambda r: r["flops_per_s"])
    print(
        f"peak: {best['flops_per_s'] / 1e9:.1f} GFLOP/s at n = {best['size']}, "
        f"{args.threads} threads"
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"peak": best, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
