"""Training and inference throughput, and peak memory, of the demo model (preset world-demo).

    python benchmarks/demo_model.py [--n 640] [--steps 30] [--threads 2]

Loads a generated world of --n samples (cached like the demo's), then times --steps training
steps and a full inference pass over the loaded samples. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch

from omnifuse.config import load_config, parse_config
from omnifuse.eval.evaluate import predict
from omnifuse.model import OmnifuseModel
from omnifuse.train.loop import epoch_order
from omnifuse.train.run import prepare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=640)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = load_config("preset:world-demo").model_dump(mode="json")
    data["data"]["dataset"]["n"] = args.n
    start = time.perf_counter()
    prepared = prepare(parse_config(data), progress=False)
    load_seconds = time.perf_counter() - start
    samples = [s for split in prepared.splits.values() for s in split]

    model = OmnifuseModel.build(prepared.config)
    batch_size = prepared.config.train.batch_size
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    order = epoch_order(len(samples), seed=0, epoch=0).tolist() * (
        args.steps * batch_size // len(samples) + 1
    )
    # collate up front: time the model, not the collate
    batches = [
        prepared.collate([samples[i] for i in order[k * batch_size : (k + 1) * batch_size]])
        for k in range(args.steps)
    ]
    model.train()
    start = time.perf_counter()
    for batch in batches:
        loss = model.training_forward(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    train_seconds = time.perf_counter() - start

    start = time.perf_counter()
    predict(model, samples, prepared.collate)
    infer_seconds = time.perf_counter() - start

    print(
        json.dumps(
            {
                "samples_loaded": len(samples),
                "load_samples_per_s": round(len(samples) / load_seconds, 1),
                "parameters": sum(p.numel() for p in model.parameters()),
                "train_samples_per_s": round(args.steps * batch_size / train_seconds, 1),
                "inference_samples_per_s": round(len(samples) / infer_seconds, 1),
                "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "threads": args.threads,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
