"""Where one fusion strategy's training step spends its time: torch.profiler over a few steps.

The model and data are exactly one `omnifuse bench` entry's (the dataset's bench config, the
strategy sized to `--budget`); steps run over pre-collated batches, as the bench's MFU does.

    .venv/bin/python benchmarks/profile_fusion.py --dataset avmnist --fusion early \
        --set data.dataset.train_size=6000 --set data.dataset.test_size=1000
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from omnifuse.bench.runner import DEFAULT_BUDGET, Entry, bench_config, entry_config
from omnifuse.model import OmnifuseModel
from omnifuse.train.loop import make_optimizer, seed_everything
from omnifuse.train.run import prepare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="avmnist")
    parser.add_argument("--fusion", default="early")
    parser.add_argument("--budget", type=int, default=DEFAULT_BUDGET)
    parser.add_argument("--steps", type=int, default=5, help="profiled steps")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rows", type=int, default=15, help="operations listed")
    parser.add_argument("--set", action="append", default=[], help="config override")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    prepared = prepare(bench_config(args.dataset, args.set))
    entry = Entry(args.fusion, {"type": args.fusion})
    config = entry_config(prepared, entry, seed=0, budget=args.budget)
    seed_everything(0)
    model = OmnifuseModel.build(config)
    optimizer = make_optimizer(model, config.train)
    model.train()
    rows, size = prepared.splits["train"], config.train.batch_size
    batches = [prepared.collate(rows[i * size : (i + 1) * size]) for i in range(4)]

    def step(i: int) -> None:
        losses = model.training_forward(batches[i % len(batches)])
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.train.grad_clip)
        optimizer.step()
        model.after_step()

    for i in range(3):  # warm-up
        step(i)
    start = time.perf_counter()
    for i in range(10):
        step(i)
    ms = (time.perf_counter() - start) / 10 * 1000
    print(f"{args.fusion}: {ms:.1f} ms per step of {size} ({size / ms * 1000:.0f} samples/s)")
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as profiler:
        for i in range(args.steps):
            step(i)
    averages = profiler.key_averages()
    print(averages.table(sort_by="self_cpu_time_total", row_limit=args.rows))
    by_shape = profiler.key_averages(group_by_input_shape=True)
    print(by_shape.table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
