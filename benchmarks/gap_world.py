"""The modality gap on a generated world: cross-modal recall@10 (caption i -> image i) with
and without centring each modality by its own centroid, through an exact and an IVF index.

Generates a world, trains the preset:world-tiny model on it (or reuses --model), builds an
exact and an approximate image index with captions present, and prints each index's gap and
recall numbers as measured at build time.

    python benchmarks/gap_world.py --n 2000 --out /tmp/gap-world
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import faiss
import torch

from omnifuse.config import load_config
from omnifuse.data.world import generate_world
from omnifuse.retrieval import IndexConfig, build_index
from omnifuse.train.run import run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="samples in the world")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("/tmp/gap-world"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    manifest = args.out / "world" / "manifest.parquet"
    if not manifest.is_file():  # generated once, reused by later runs
        manifest = generate_world(args.out / "world", n=args.n, seed=args.seed)
    model = args.out / "model"
    if not (model / "model.safetensors").is_file():
        overrides = [f"data.manifest={manifest}", "data.dataset=null",
                     f"train.epochs={args.epochs}", "train.threads=1"]  # fmt: skip
        run(load_config("preset:world-tiny", overrides), model, checkpoints=False)
    for name, config in {
        "exact, auto": IndexConfig(kind="exact", gap_correction="auto"),
        "exact, centred": IndexConfig(kind="exact", gap_correction="on"),
        "ivf, centred": IndexConfig(kind="ivf", nlist=32, nprobe=4, gap_correction="on"),
        "exact, uncorrected": IndexConfig(kind="exact", gap_correction="off"),
        "ivf, uncorrected": IndexConfig(kind="ivf", nlist=32, nprobe=4, gap_correction="off"),
    }.items():
        out = args.out / f"index-{name.replace(', ', '-')}"
        shutil.rmtree(out, ignore_errors=True)
        info = build_index(model, manifest, "image", out, config=config, progress=False).info()
        keep = ("size", "gap_correction", "gap", "recall")
        print(name, json.dumps({key: info[key] for key in keep}), flush=True)


if __name__ == "__main__":
    main()
