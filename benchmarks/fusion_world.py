"""Every fusion strategy on the generated world, at equal fusion parameter count.

    python benchmarks/fusion_world.py [--n 3000] [--epochs 12] [--budget 150000] [--threads 2]
                                      [--no-aux] [--only early,late] [--json runs/fusion_world.json]

Prepares the world once (preset world-demo: image, text, audio, tabular; tasks scene, synergy,
score, retrieval), then trains one model per strategy through `omnifuse.train.run.train`, the
same loop and settings for all, changing only `model.fusion` (sized with `budget` to about the
same number of parameters) and evaluating on the test split. The unimodal baseline runs once
per modality. Prints a Markdown table and writes the rows as JSON.

Two auxiliary tasks are added unless --no-aux: `pattern` and `hum`, the world's latent
background pattern (seen only in the image) and hum (heard only in the audio). They teach the
encoders to see and hear the two features quickly, so that `synergy` (pattern XOR hum) then
measures what it is meant to, whether the fusion can *combine* them, rather than whether a
from-scratch encoder finds a feature through an XOR signal within a short budget (the
preset's own runs learn that late and unreliably). Any strategy can predict `pattern` and
`hum`, late fusion included: each needs one modality.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from omnifuse.config import load_config, parse_config
from omnifuse.fusion.base import count_parameters
from omnifuse.train.run import Prepared, prepare, train

STRATEGIES = [
    "early",
    "late",
    "tensor",
    "low_rank",
    "cross_attention",
    "bottleneck",
    "perceiver",
    "gmu",
]


def runs(modalities: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """(label, fusion options) for every strategy, and the unimodal baseline per modality."""
    return [(name, {"type": name}) for name in STRATEGIES] + [
        (f"unimodal ({m})", {"type": "unimodal", "modality": m}) for m in modalities
    ]


def run_one(prepared: Prepared, fusion: dict[str, Any], budget: int) -> dict[str, Any]:
    data = prepared.config.model_dump(mode="json")
    data["model"]["fusion"] = {**fusion, "budget": budget}
    config = parse_config(data, "fusion_world")
    trained = train(replace(prepared, config=config), progress=False)
    metrics = trained.metrics
    return {
        "fusion": fusion,
        "width": trained.model.fusion.width,
        "fusion_parameters": count_parameters(trained.model.fusion),
        "model_parameters": count_parameters(trained.model),
        "synergy_accuracy": metrics["synergy"]["accuracy"],
        "scene_accuracy": metrics["scene"]["accuracy"],
        "score_mse": metrics["score"]["mse"],
        "train_seconds": round(trained.train_seconds, 1),
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| fusion | synergy accuracy | scene accuracy | score MSE | fusion parameters "
        "| model parameters | training seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['label']} | {row['synergy_accuracy']:.3f} | {row['scene_accuracy']:.3f} "
            f"| {row['score_mse']:.3f} | {row['fusion_parameters']:,} "
            f"| {row['model_parameters']:,} | {row['train_seconds']:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000, help="samples in the world")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--budget", type=int, default=150_000, help="fusion parameters")
    parser.add_argument("--no-aux", action="store_true", help="without the pattern/hum tasks")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default="", help="comma-separated labels to run")
    parser.add_argument("--json", type=Path, default=Path("runs/fusion_world.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = load_config("preset:world-demo").model_dump(mode="json")
    data["data"]["dataset"].update(n=args.n, seed=args.seed)
    data["train"].update(epochs=args.epochs, seed=args.seed, threads=args.threads)
    if not args.no_aux:
        data["model"]["tasks"] |= {
            name: {"type": "classification", "target": f"latent_{name}"}
            for name in ("pattern", "hum")
        }
    start = time.perf_counter()
    prepared = prepare(parse_config(data, "fusion_world"), progress=False)
    print(f"prepared {args.n} samples in {time.perf_counter() - start:.1f} s", flush=True)

    only = {label.strip() for label in args.only.split(",") if label.strip()}
    rows = []
    for label, fusion in runs(sorted(prepared.config.modalities)):
        if only and label not in only and fusion["type"] not in only:
            continue
        row = {"label": label, **run_one(prepared, fusion, args.budget)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    settings = {
        "n": args.n,
        "epochs": args.epochs,
        "budget": args.budget,
        "threads": args.threads,
        "seed": args.seed,
        "aux_tasks": not args.no_aux,
        "splits": {name: len(s) for name, s in prepared.splits.items()},
        "evaluated_on": prepared.evaluation,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"settings": settings, "rows": rows}, indent=2) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
