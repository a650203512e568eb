"""Data efficiency: image-text retrieval R@1 against the number of training samples, for
from-scratch encoders and for the pretrained EfficientNet-Lite0 + all-MiniLM-L6-v2.

    python benchmarks/pretrained_data_efficiency.py [--n 3000] [--sizes 100,300,1000,all]
        [--steps 300] [--threads 2]

Both settings read the same generated world (--n samples, its fixed test split) and train only
the alignment task for the same number of optimiser steps per size (--steps, at most 60
epochs). From scratch: `image_conv` on the world's 64 px images and the byte
`text_transformer`. Pretrained: `world-pretrained.yaml` beside this script, both backbones
frozen, their features cached on disk in a temporary folder so that each sample passes through
them once over all sizes. Prints one JSON object: R@1 (image to text and text to image) per
setting and size.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from omnifuse.config import load_config, parse_config
from omnifuse.eval.evaluate import evaluate
from omnifuse.model import OmnifuseModel
from omnifuse.train.loop import fit
from omnifuse.train.run import prepare

SCRATCH = {
    "image": {"kind": "image", "size": 64, "encoder": {"type": "image_conv"}},
    "text": {"kind": "text", "column": "caption", "max_length": 128},
}


CONFIG = Path(__file__).with_name("world-pretrained.yaml")


def run(data: dict[str, Any], sizes: list[int | None], steps: int) -> dict[str, dict[str, float]]:
    """R@1 per training-set size ("all" for None) of the config `data`."""
    prepared = prepare(parse_config(data), progress=False)
    train = prepared.splits["train"]
    results = {}
    for size in sizes:
        samples = train[: size or len(train)]
        config = prepared.config.model_copy(deep=True)
        per_epoch = max(1, len(samples) // config.train.batch_size)
        config.train.epochs = min(60, math.ceil(steps / per_epoch))
        torch.manual_seed(config.train.seed)
        model = OmnifuseModel.build(config)
        start = time.perf_counter()
        fit(model, samples, config.train, collate=prepared.collate, progress=False)
        metrics = evaluate(model, prepared.splits["test"], prepared.collate)["retrieval"]
        results[str(len(samples) if size else "all")] = {
            "samples": len(samples),
            "image_to_text_R@1": round(metrics["image_to_text_R@1"], 3),
            "text_to_image_R@1": round(metrics["text_to_image_R@1"], 3),
            "train_seconds": round(time.perf_counter() - start, 1),
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--sizes", default="100,300,1000,all")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes = [None if s == "all" else int(s) for s in args.sizes.split(",")]

    pretrained = load_config(CONFIG).model_dump(mode="json")
    pretrained["data"]["dataset"]["n"] = args.n
    scratch = {**pretrained, "modalities": SCRATCH}
    with tempfile.TemporaryDirectory() as cache:
        for modality in pretrained["modalities"].values():
            modality["encoder"]["cache_dir"] = cache
        result = {
            "scratch": run(scratch, sizes, args.steps),
            "pretrained": run(pretrained, sizes, args.steps),
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
