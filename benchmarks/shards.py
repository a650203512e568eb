"""Training from preprocessed shards against reading the manifest's files (streaming).

    python benchmarks/shards.py [--rows 30000] [--steps 40] [--features]

On the synthetic manifest of benchmarks/streaming.py (N rows of a 32 x 32 PNG, a caption
and a label): times `omnifuse data shard` (data.shards.write_shards), then, each in a fresh
process, the time to the first step, 40 training steps' samples/s and the peak RSS of
training from the shards (0 and 1 workers) and of streaming from the files (1 worker).

With --features the captions are read by a frozen all-MiniLM-L6-v2 (`text_minilm`, its
feature cache off) and the shards are written twice, with and without `--features`; the runs
are streaming from the files, the shards of inputs and the shards of MiniLM's features
(1 worker each).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from streaming import config, write_manifest


def peak_rss_mib() -> int:
    """This process's peak RSS (VmHWM: unlike ru_maxrss, not inherited from the parent that
    wrote the shards)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def measure(data: dict, workers: int, steps: int) -> dict:
    import torch

    from omnifuse.config import parse_config
    from omnifuse.data.dataset import SampleSet
    from omnifuse.data.shards import read_features
    from omnifuse.model import OmnifuseModel
    from omnifuse.train.loop import fit
    from omnifuse.train.run import prepare

    torch.set_num_threads(1)
    start = time.perf_counter()
    prepared = prepare(parse_config(data), progress=False)
    first_step = time.perf_counter() - start
    train = prepared.splits["train"]
    rows = steps * 64
    loaded = None if train.loaded is None else train.loaded[:rows]
    subset = SampleSet(train.manifest, train.rows[:rows], train.readers, loaded)
    model = OmnifuseModel.build(prepared.config)
    read_features(model, prepared.features)  # the encoders of stored features read them
    start = time.perf_counter()
    train_config = prepared.config.train
    fit(model, subset, train_config, collate=prepared.collate, workers=workers, progress=False)
    return {
        "workers": workers,
        "peak_rss_mib": peak_rss_mib(),
        "first_step_s": round(first_step, 2),
        "train_samples_per_s": round(rows / (time.perf_counter() - start), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=30000)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--root", type=Path, default=Path("/tmp/omnifuse-streaming"))
    parser.add_argument("--features", action="store_true", help="a frozen MiniLM reads text")
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)  # config JSON, workers
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(json.loads(args.one[0]), int(args.one[1]), args.steps)))
        return
    manifest = write_manifest(args.root, args.rows)

    def run_config(stream: bool) -> dict:
        data = config(manifest, stream, 1 if stream else 0)
        if args.features:
            encoder = {"type": "text_minilm", "train": "none", "cache": False}
            data["modalities"]["text"] |= {"tokenizer": "bytes", "encoder": encoder}
        return data

    kinds = [("shards", False)] + ([("feature shards", True)] if args.features else [])
    folders = {path: write(run_config(False), args, path, features) for path, features in kinds}

    def from_shards(path: str) -> dict:
        return run_config(False) | {"data": {"shards": str(folders[path]), "workers": 0}}

    runs = [("shards", from_shards("shards"), w) for w in ((1,) if args.features else (0, 1))]
    runs += [("feature shards", from_shards("feature shards"), 1)] if args.features else []
    runs += [("stream", run_config(True), 1)]
    for path, data, workers in runs:
        command = [sys.executable, __file__, "--steps", str(args.steps)]
        command += ["--one", json.dumps(data), str(workers)]
        result = subprocess.run(command, capture_output=True, text=True, check=True)
        print(json.dumps({"path": path, **json.loads(result.stdout.splitlines()[-1])}), flush=True)


def write(data: dict, args: argparse.Namespace, path: str, features: bool) -> Path:
    """`omnifuse data shard` of `data`'s manifest (with `--features` if asked), timed."""
    from omnifuse.config import parse_config
    from omnifuse.data.shards import write_shards

    out = args.root / f"{path.replace(' ', '-')}-{args.rows}"
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    write_shards(parse_config(data), out, features=features, progress=False)
    size = sum(f.stat().st_size for f in out.iterdir()) // 2**20
    seconds = round(time.perf_counter() - start, 1)
    print(json.dumps({"write": path, "rows": args.rows, "write_s": seconds, "mib": size}))
    return out


if __name__ == "__main__":
    main()
