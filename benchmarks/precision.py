"""Training samples/s with `train.precision` fp32 against bf16 (torch.autocast), side by side.

    python benchmarks/precision.py [--rounds 3] [--threads 2]

Two models, each trained with the library's own loop (`train.loop.fit`) in both precisions,
rounds interleaved (best round each): the small image + text model of
benchmarks/streaming.py (dim 32, on 1,280 in-memory samples of its 3,000-row manifest) and a
Perceiver fusion at the size of benchmarks/perceiver_vs_hf.py (width 256, 64 latents,
1,024 input tokens of one vector modality, batch 32). Prints one JSON line per model.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from streaming import config, write_manifest


def small(root: Path) -> dict[str, Any]:
    data = config(write_manifest(root, 3000), False, 0)
    data["train"] |= {"epochs": 1}
    return data


def perceiver(root: Path) -> dict[str, Any]:
    """A manifest of 1,280 rows, each a (1024, 256) .npy series read as one modality."""
    folder = root / "perceiver"
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / "manifest.jsonl"
    if not manifest.exists():
        rng = np.random.default_rng(0)
        rows = []
        for i in range(64):
            np.save(folder / f"{i}.npy", rng.normal(size=(1024, 256)).astype(np.float32))
        for i in range(1280):
            rows.append({"id": str(i), "x": f"{i % 64}.npy", "y": f"c{i % 10}"})
        manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {
        "data": {"manifest": str(manifest), "val_fraction": 0.0, "test_fraction": 0.05},
        "modalities": {
            "x": {
                "kind": "timeseries",
                "channels": 256,
                "max_length": 1024,
                "encoder": {"type": "timeseries_patch", "patch": 1, "depth": 0},
            }
        },
        "model": {
            "dim": 256,
            "fusion": {
                "type": "perceiver",
                "latents": 64,
                "depth": 4,
                "heads": 8,
                "cross_heads": 1,
                "width": 256,
            },
            "tasks": {"y": {"type": "classification", "target": "y"}},
        },
        "train": {"epochs": 1, "batch_size": 32, "seed": 0},
    }


def rate(data: dict[str, Any], precision: str, threads: int) -> float:
    from omnifuse.config import parse_config
    from omnifuse.model import OmnifuseModel
    from omnifuse.train.loop import fit
    from omnifuse.train.run import prepare

    data = json.loads(json.dumps(data))
    data["train"] |= {"precision": precision, "threads": threads}
    prepared = prepare(parse_config(data), progress=False)
    samples = prepared.splits["train"][:1280]
    model = OmnifuseModel.build(prepared.config)
    start = time.perf_counter()
    fit(model, samples, prepared.config.train, collate=prepared.collate, progress=False)
    return (
        len(samples)
        // prepared.config.train.batch_size
        * prepared.config.train.batch_size
        / (time.perf_counter() - start)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--root", type=Path, default=Path("/tmp/omnifuse-streaming"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for name, data in (
        ("small image + text", small(args.root)),
        ("perceiver 256", perceiver(args.root)),
    ):
        best = {"fp32": 0.0, "bf16": 0.0}
        for _ in range(args.rounds):
            for precision in best:
                best[precision] = max(best[precision], rate(data, precision, args.threads))
        line = {"model": name, "threads": args.threads}
        line |= {f"{p}_samples_per_s": round(r, 1) for p, r in best.items()}
        print(json.dumps(line | {"bf16 / fp32": round(best["bf16"] / best["fp32"], 2)}), flush=True)


if __name__ == "__main__":
    main()
