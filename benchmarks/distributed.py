"""One process against two under torchrun, with DDP and with FSDP, on this machine's CPU.

    python benchmarks/distributed.py [--rows 3000] [--epochs 1] [--rounds 2]

Trains the small image + text model of benchmarks/streaming.py on its synthetic manifest
(in memory, torch threads 1 per process, global batch 64) with `omnifuse train`: in one
process, and with `--nproc 2` under `train.strategy` ddp and fsdp, the runs interleaved over
--rounds. Prints one JSON line per run: the training seconds (metrics.json's train_seconds,
validation included), global samples/s and the final loss.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from streaming import config, write_manifest


def train(data: dict, nproc: int, out: Path) -> dict:
    source = out.with_suffix(".yaml")
    source.write_text(yaml.safe_dump(data))
    command = [sys.executable, "-m", "omnifuse", "train", str(source), "--out", str(out)]
    command += ["--nproc", str(nproc)] if nproc > 1 else []
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(command, check=True, env=env, capture_output=True)
    metrics = json.loads((out / "metrics.json").read_text())
    with (out / "steps.csv").open() as file:
        steps = list(csv.DictReader(file))
    samples = len(steps) * data["train"]["batch_size"]
    return {
        "train_s": metrics["train_seconds"],
        "samples_per_s": round(samples / metrics["train_seconds"], 1),
        "final_loss": round(float(steps[-1]["loss"]), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--root", type=Path, default=Path("/tmp/omnifuse-streaming"))
    args = parser.parse_args()
    manifest = write_manifest(args.root, args.rows)
    runs = [("one process", 1, "ddp"), ("2 processes, ddp", 2, "ddp")]
    runs += [("2 processes, fsdp", 2, "fsdp")]
    with tempfile.TemporaryDirectory() as folder:
        for round_ in range(args.rounds):
            for name, nproc, strategy in runs:
                data = config(manifest, False, 0)
                data["train"] |= {"epochs": args.epochs, "strategy": strategy}
                out = Path(folder) / f"{round_}-{nproc}-{strategy}"
                print(json.dumps({"run": name, "round": round_ + 1, **train(data, nproc, out)}))


if __name__ == "__main__":
    main()
