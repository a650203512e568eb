"""Training speed with the default thread count, on a quiet machine and beside a busy process.

    python benchmarks/busy_core.py [--rows 3000] [--rounds 2]

Trains the small image + text model of benchmarks/streaming.py (in memory, one epoch) with
`omnifuse train`, with `train.threads` unset (the default: `train.distributed.share_cores`)
and set to the machine's core count (torch's own default before it), each on a quiet machine
and while another process spins on one core, the runs interleaved over --rounds. Prints one
JSON line per run: the training seconds and samples/s (metrics.json's train_seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from streaming import config, write_manifest

SPIN = "while True: pass"


def train(data: dict, out: Path) -> dict:
    source = out.with_suffix(".yaml")
    source.write_text(yaml.safe_dump(data))
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    command = [sys.executable, "-m", "omnifuse", "train", str(source), "--out", str(out)]
    subprocess.run(command, check=True, env=env, capture_output=True)
    metrics = json.loads((out / "metrics.json").read_text())
    samples = (
        metrics["splits"]["train"] // data["train"]["batch_size"] * data["train"]["batch_size"]
    )
    return {
        "train_s": metrics["train_seconds"],
        "samples_per_s": round(samples / metrics["train_seconds"], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--root", type=Path, default=Path("/tmp/omnifuse-streaming"))
    args = parser.parse_args()
    manifest = write_manifest(args.root, args.rows)
    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as folder:
        for round_ in range(args.rounds):
            for busy in (False, True):
                spinner = subprocess.Popen([sys.executable, "-c", SPIN]) if busy else None
                try:
                    for threads in (None, cores):
                        data = config(manifest, False, 0)
                        data["train"].pop("threads")
                        if threads is not None:
                            data["train"]["threads"] = threads
                        out = Path(folder) / f"{round_}-{busy}-{threads}"
                        result = train(data, out)
                        label = "default" if threads is None else f"{threads} (all cores)"
                        line = {"round": round_ + 1, "busy core": busy, "threads": label}
                        print(json.dumps(line | result), flush=True)
                finally:
                    if spinner is not None:
                        spinner.kill()
                        spinner.wait()


if __name__ == "__main__":
    main()
