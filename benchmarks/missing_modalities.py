"""Graceful degradation: the fused model with one modality absent at test, against the model
trained on the remaining modalities alone, with and without `model.unimodal_loss`.

    python benchmarks/missing_modalities.py --config preset:avmnist --fusions late,early \
        --unimodal-loss 0,0.5 [--seeds 1] [--set train.threads=1 ...] [--json out.json]

The data is prepared once. For each fusion and each unimodal-loss weight one model is trained
(the preset's settings; only `model.fusion` and `model.unimodal_loss` change) and scored on
the evaluation split with every modality present and with each modality absent from every
sample. For each modality m, the reference is a model of the same config trained on the other
modalities only (`train(prepared, modalities=rest)`; with one modality left, the `unimodal`
fusion, as `omnifuse bench` trains it), the number the fused model should reach with m
missing. Prints one Markdown table per task.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from omnifuse.config import apply_overrides, parse_config, read_config_file
from omnifuse.eval.report import modality_ablation
from omnifuse.train.run import Prepared, prepare, train


def score(metrics: dict[str, dict[str, float]], task: str) -> float:
    values = metrics[task]
    return values["accuracy"] if "accuracy" in values else -values["mse"]


def with_options(prepared: Prepared, fusion: str, weight: float, seed: int) -> Prepared:
    data = prepared.config.model_dump(mode="json")
    data["model"]["fusion"] = {**data["model"]["fusion"], "type": fusion}
    if fusion != prepared.config.model.fusion.type:
        data["model"]["fusion"] = {"type": fusion}
    data["model"]["unimodal_loss"] = weight
    data["train"]["seed"] = seed
    return replace(prepared, config=parse_config(data, "missing_modalities"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="preset:avmnist")
    parser.add_argument("--fusions", default="late,early")
    parser.add_argument("--unimodal-loss", default="0,0.5")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    config = parse_config(apply_overrides(read_config_file(args.config), args.overrides))
    started = time.perf_counter()
    prepared = prepare(config, progress=False)
    names = sorted(prepared.config.modalities)
    tasks = sorted(
        n
        for n, t in prepared.config.model.tasks.items()
        if t.type in ("classification", "regression")
    )
    rows: list[dict[str, Any]] = []
    for seed in range(config.train.seed, config.train.seed + args.seeds):
        base = with_options(prepared, prepared.config.model.fusion.type, 0.0, seed)
        references = {}
        for m in names:
            rest = [n for n in names if n != m]
            # one modality left: the bench's unimodal baseline (its own layers, no fusion)
            reference = with_options(prepared, "unimodal", 0.0, seed) if len(rest) == 1 else base
            alone = train(reference, modalities=rest, progress=False)
            references[m] = {"metrics": alone.metrics, "seconds": round(alone.train_seconds, 1)}
            print(f"seed {seed} without {m} (trained on {','.join(rest)}): {alone.metrics}")
        for fusion in args.fusions.split(","):
            for weight in (float(w) for w in args.unimodal_loss.split(",")):
                trained = train(with_options(prepared, fusion, weight, seed), progress=False)
                samples = prepared.splits[prepared.evaluation]
                ablation = modality_ablation(trained.model, samples, prepared.collate)
                row = {
                    "seed": seed,
                    "fusion": fusion,
                    "unimodal_loss": weight,
                    "metrics": trained.metrics,
                    "without": ablation,
                    "references": references,
                    "seconds": round(trained.train_seconds, 1),
                }
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "references"}))
    for task in tasks:
        print(f"\n### {task}\n")
        print(
            "| seed | fusion | unimodal_loss | all | "
            + " | ".join(f"without {m} | rest alone" for m in names)
            + " | train s |"
        )
        print("|---" * (5 + 2 * len(names)) + "|")
        for r in rows:
            cells = [f"{score(r['metrics'], task):.3f}"]
            for m in names:
                cells.append(f"{score(r['without'][m], task):.3f}")
                ref = r["references"][m]["metrics"]
                cells.append(f"{score(ref, task):.3f}" if task in ref else "-")
            print(
                f"| {r['seed']} | {r['fusion']} | {r['unimodal_loss']} | "
                + " | ".join(cells)
                + f" | {r['seconds']} |"
            )
    print(f"\nthreads {torch.get_num_threads()}, whole run {time.perf_counter() - started:.0f} s")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
