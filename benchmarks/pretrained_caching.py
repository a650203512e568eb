"""Epoch time with frozen pretrained encoders, with and without feature caching.

    python benchmarks/pretrained_caching.py [--n 1000] [--epochs 3] [--threads 2]

Trains `world-pretrained.yaml` beside this script (frozen EfficientNet-Lite0 at 128 px and
all-MiniLM-L6-v2, image-text alignment) on a generated world of --n samples, timing every
epoch: once with the in-memory feature cache (the first epoch fills it, later ones skip both
backbones) and once without. Prints one JSON object; `speedup` is the mean uncached epoch time
over the mean cached epoch time after the first.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path
from typing import Any

import torch

from omnifuse.config import RunConfig, load_config, parse_config
from omnifuse.model import OmnifuseModel
from omnifuse.train.loop import fit
from omnifuse.train.run import Prepared, prepare

CONFIG = Path(__file__).with_name("world-pretrained.yaml")


def with_cache(config: RunConfig, cache: bool) -> RunConfig:
    data = config.model_dump(mode="json")
    for modality in data["modalities"].values():
        modality["encoder"]["cache"] = cache
    return parse_config(data)


def epoch_seconds(prepared: Prepared, config: RunConfig) -> list[float]:
    """Seconds per training epoch, measured between the loop's end-of-epoch callbacks."""
    model = OmnifuseModel.build(config)
    marks = [time.perf_counter()]

    def mark(model: OmnifuseModel) -> dict[str, float]:
        marks.append(time.perf_counter())
        return {}

    fit(
        model,
        prepared.splits["train"],
        config.train,
        collate=prepared.collate,
        validate=mark,
        progress=False,
    )
    return [round(b - a, 3) for a, b in itertools.pairwise(marks)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = load_config(CONFIG).model_dump(mode="json")
    data["data"]["dataset"]["n"] = args.n
    data["train"]["epochs"] = args.epochs
    prepared = prepare(parse_config(data), progress=False)
    cached = epoch_seconds(prepared, with_cache(prepared.config, True))
    uncached = epoch_seconds(prepared, with_cache(prepared.config, False))
    later = cached[1:] or cached
    result: dict[str, Any] = {
        "train_samples": len(prepared.splits["train"]),
        "threads": args.threads,
        "cached_epoch_seconds": cached,
        "uncached_epoch_seconds": uncached,
        "speedup": round(sum(uncached) / len(uncached) / (sum(later) / len(later)), 2),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
