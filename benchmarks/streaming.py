"""Memory and speed of the in-memory and the streaming data paths against dataset size.

    python benchmarks/streaming.py --rows 3000 30000 300000 --workers 0 1 2 [--steps 40]

Writes a synthetic Parquet manifest of N image + text rows (256 distinct 32 x 32 PNG images, each
row naming one, with a caption and a 10-class label), then, for each size and path, runs a
fresh process that prepares the data (in memory: every sample loaded; streaming: every row
checked, none kept) and trains --steps steps of a small image + text model, reading batches
with each --workers count when streaming. Prints one JSON line per run: peak RSS, time to the
first step (the data preparation), and steady training samples/s.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

IMAGES = 256


def write_manifest(root: Path, rows: int) -> Path:
    """root/manifest-N.parquet over root/images/*.png (written once)."""
    images = root / "images"
    if not images.exists():
        images.mkdir(parents=True)
        rng = np.random.default_rng(0)
        for i in range(IMAGES):
            pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            pixels[:, :, i % 3] = 25 * (i % 10)  # the label shows in one channel
            Image.fromarray(pixels).save(images / f"{i:03d}.png")
    path = root / f"manifest-{rows}.parquet"
    if not path.exists():
        words = ["red", "blue", "small", "large", "circle", "square", "left", "right"]
        rng_text = random.Random(0)
        columns: dict[str, list[str]] = {"id": [], "image": [], "caption": [], "label": []}
        for row in range(rows):
            image = rng_text.randrange(IMAGES)
            columns["id"].append(str(row))
            columns["image"].append(f"images/{image:03d}.png")
            columns["caption"].append(" ".join(rng_text.choice(words) for _ in range(6)))
            columns["label"].append(f"c{image % 10}")
        splits = [
            "train" if r % 10 < 8 else ("val" if r % 10 == 8 else "test") for r in range(rows)
        ]
        pq.write_table(pa.table({**columns, "split": splits}), path)
    return path


def config(manifest: Path, stream: bool, workers: int) -> dict:
    return {
        "data": {"manifest": str(manifest), "stream": stream, "workers": workers},
        "modalities": {
            "image": {"kind": "image", "size": 32, "encoder": {"type": "image_conv", "width": 16}},
            "text": {"kind": "text", "column": "caption", "max_length": 48},
        },
        "model": {
            "dim": 32,
            "fusion": {"type": "perceiver", "latents": 8, "depth": 1},
            "tasks": {"label": {"type": "classification", "target": "label"}},
        },
        "train": {"epochs": 1, "batch_size": 64, "seed": 0, "threads": 1},
    }


def measure(manifest: Path, stream: bool, workers: int, steps: int) -> dict:
    """In this process: prepare, then `steps` training steps; peak RSS and timings."""
    import torch

    from omnifuse.config import parse_config
    from omnifuse.data.dataset import SampleSet
    from omnifuse.model import OmnifuseModel
    from omnifuse.train.loop import fit
    from omnifuse.train.run import prepare

    torch.set_num_threads(1)
    start = time.perf_counter()
    prepared = prepare(parse_config(config(manifest, stream, workers)), progress=False)
    first_step = time.perf_counter() - start
    train = prepared.splits["train"]
    rows = steps * 64
    loaded = None if train.loaded is None else train.loaded[:rows]
    subset = SampleSet(train.manifest, train.rows[:rows], train.readers, loaded)
    model = OmnifuseModel.build(prepared.config)
    start = time.perf_counter()
    fit(
        model,
        subset,
        prepared.config.train,
        collate=prepared.collate,
        workers=workers,
        progress=False,
    )
    seconds = time.perf_counter() - start
    return {
        "rows": sum(len(s) for s in prepared.splits.values()),
        "path": "stream" if stream else "memory",
        "workers": workers,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
        "first_step_s": round(first_step, 1),
        "train_samples_per_s": round(rows / seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[3000, 30000])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--root", type=Path, default=Path("/tmp/omnifuse-streaming"))
    parser.add_argument("--memory-up-to", type=int, default=30000, help="largest in-memory run")
    parser.add_argument("--one", nargs=3, help=argparse.SUPPRESS)  # manifest stream workers
    args = parser.parse_args()
    if args.one:
        manifest, stream, workers = args.one
        print(json.dumps(measure(Path(manifest), stream == "1", int(workers), args.steps)))
        return
    for rows in args.rows:
        manifest = write_manifest(args.root, rows)
        runs = [(True, w) for w in args.workers]
        runs = ([(False, 0)] if rows <= args.memory_up_to else []) + runs
        for stream, workers in runs:
            one = [str(manifest), "1" if stream else "0", str(workers)]
            command = [sys.executable, __file__, "--steps", str(args.steps), "--one", *one]
            result = subprocess.run(command, capture_output=True, text=True, check=True)
            print(result.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
