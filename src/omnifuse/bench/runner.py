"""The fusion benchmark: every strategy at a common parameter budget, the unimodal baselines,
several seeds; quality, cost, model FLOPs utilisation and the robustness protocol.

    config = bench_config("world", ["data.dataset.n=600"])
    results = run_bench(config, Path("bench-world"), fusions="all", seeds=3)

The data is prepared once (loaded and fitted on the training split); each (strategy, seed)
then trains a fresh model from a copy of the config in which only `model.fusion` (sized with
`budget`) and `train.seed` (initial weights and batch order) change, and is evaluated on the
evaluation split, clean and under every perturbation of `omnifuse.eval.robustness`.
"""

from __future__ import annotations

import logging
import math
import platform
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from omnifuse.bench.cost import PeakMemory, matmul_peak, step_cost
from omnifuse.config import RunConfig, apply_overrides, parse_config, read_config_file
from omnifuse.errors import ConfigError
from omnifuse.eval.evaluate import evaluate
from omnifuse.eval.robustness import (
    LEVELS,
    LEVELS_WITH_CLEAN,
    effective_robustness,
    relative_robustness,
)
from omnifuse.eval.robustness import sweep as robustness_sweep
from omnifuse.fusion.base import count_parameters
from omnifuse.model import OmnifuseModel
from omnifuse.registry import closest, list_fusions
from omnifuse.train.distributed import share_cores
from omnifuse.train.loop import seed_everything
from omnifuse.train.run import Prepared, prepare, train

log = logging.getLogger(__name__)

# the base config of each dataset: a preset shipped with the package
DATASETS = {"world": "world-demo", "avmnist": "avmnist"}
# modalities perturbed as another kind: AV-MNIST's audio is a spectrogram read as an image,
# and MultiBench perturbs it as audio (additive noise, time-frame dropout)
PERTURB_AS = {"avmnist": {"audio": "audio"}}
REFERENCE = "late"  # effective robustness and the winner's margin are measured against it
# the shares of test samples (percent) a modality is absent from in the missing-modality table:
# points of each modality's `missing` robustness curve (0: the clean accuracy)
MISSING_SHARES = (0, 50, 100)
DEFAULT_BUDGET = 150_000
# per-seed scalars, averaged over seeds in the summary
SCALARS = (
    "accuracy",
    "macro_f1",
    "fusion_parameters",
    "model_parameters",
    "train_seconds",
    "train_samples_per_s",
    "inference_samples_per_s",
    "peak_rss_mib",
    "peak_rss_added_mib",
)


@dataclass(frozen=True)
class Entry:
    """One line of the benchmark: a label and the fusion options it trains with."""

    label: str
    fusion: dict[str, Any]

    @property
    def unimodal(self) -> bool:
        return self.fusion["type"] == "unimodal"


def bench_config(dataset: str, overrides: Sequence[str] = ()) -> RunConfig:
    """The base config of a dataset: `world` is the world-demo preset (image, text, audio,
    tabular) with one task, `scene` (classification of `scene_class`); `avmnist` is
    preset:avmnist. `overrides` (`key.path=value`) are applied last."""
    if dataset not in DATASETS:
        raise ConfigError(
            f"bench: unknown dataset '{dataset}'{closest(dataset, DATASETS)}; "
            f"known: {', '.join(DATASETS)}"
        )
    data = read_config_file(f"preset:{DATASETS[dataset]}")
    if dataset == "world":
        data["model"]["tasks"] = {"scene": {"type": "classification", "target": "scene_class"}}
    return parse_config(apply_overrides(data, overrides), f"bench {dataset}")


def bench_task(config: RunConfig, task: str | None = None, *, command: str = "bench") -> str:
    """The classification task the benchmark (or `command`) scores: `task`, or the config's
    first (sorted) classification task."""
    classification = sorted(
        name for name, t in config.model.tasks.items() if t.type == "classification"
    )
    if task is None:
        if not classification:
            raise ConfigError(f"{command}: the config has no classification task to score")
        return classification[0]
    if task not in classification:
        raise ConfigError(
            f"{command}: '{task}' is not a classification task of the config"
            f"{closest(task, classification)}; it has {', '.join(classification) or 'none'}"
        )
    return task


def entries(fusions: str | Sequence[str], modalities: Sequence[str]) -> list[Entry]:
    """The strategies to run (`all`: every registered one but `unimodal`), late fusion
    always among them (the reference), then one unimodal baseline per modality."""
    known = [name for name in list_fusions() if name != "unimodal"]
    if isinstance(fusions, str):
        names = known if fusions == "all" else [f.strip() for f in fusions.split(",") if f.strip()]
    else:
        names = list(fusions)
    for name in names:
        if name not in known:
            raise ConfigError(
                f"bench --fusions: unknown fusion '{name}'{closest(name, known)}; "
                f"known: all, {', '.join(known)} (unimodal baselines always run)"
            )
    if REFERENCE not in names:
        log.info("adding late fusion, the reference for effective robustness")
        names.append(REFERENCE)
    unique = list(dict.fromkeys(names))
    return [Entry(name, {"type": name}) for name in unique] + [
        Entry(f"unimodal ({m})", {"type": "unimodal", "modality": m}) for m in sorted(modalities)
    ]


def entry_config(prepared: Prepared, entry: Entry, *, seed: int, budget: int) -> RunConfig:
    data = prepared.config.model_dump(mode="json")
    data["model"]["fusion"] = {**entry.fusion, "budget": budget}
    data["train"]["seed"] = seed
    return parse_config(data, f"bench {entry.label}")


def run_one(
    prepared: Prepared,
    entry: Entry,
    *,
    seed: int,
    budget: int,
    task: str,
    perturb_as: dict[str, str] | None = None,
    progress: bool,
) -> dict[str, Any]:
    """Train and evaluate one (strategy, seed): quality, cost and the robustness curves."""
    config = entry_config(prepared, entry, seed=seed, budget=budget)
    memory = PeakMemory()
    memory.start()
    trained = train(
        replace(prepared, config=config), progress=progress, desc=f"{entry.label} seed {seed}"
    )
    memory.stop()
    model = trained.model
    samples = prepared.splits[prepared.evaluation]
    start = time.perf_counter()
    metrics = evaluate(model, samples, prepared.collate)  # timed: collate + forward
    inference = time.perf_counter() - start
    batch = min(config.train.batch_size, len(prepared.splits["train"]))
    trained_samples = config.train.epochs * (len(prepared.splits["train"]) // batch) * batch
    curves = robustness_sweep(
        model,
        samples,
        prepared.collate,
        task,
        seed=seed,
        perturb_as=perturb_as,
        progress=progress,
    )
    return {
        "label": entry.label,
        "fusion": entry.fusion,
        "seed": seed,
        "accuracy": metrics[task]["accuracy"],
        "missing": missing_points(curves),
        "macro_f1": metrics[task]["macro_f1"],
        "metrics": metrics,
        "width": getattr(model.fusion, "width", None),
        "fusion_parameters": count_parameters(model.fusion),
        "model_parameters": count_parameters(model),
        "train_seconds": round(trained.train_seconds, 3),
        "train_samples_per_s": round(trained_samples / trained.train_seconds, 1),
        "inference_samples_per_s": round(len(samples) / inference, 1),
        "peak_rss_mib": memory.peak_mib,
        "peak_rss_added_mib": memory.added_mib,
        "robustness": curves,
        "relative_robustness": {
            m: {p: relative_robustness(LEVELS_WITH_CLEAN, v) for p, v in c.items()}
            for m, c in curves.items()
        },
    }


def missing_points(curves: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, float]]:
    """{modality: {share: accuracy}} with the modality absent from `share` percent of the
    test samples (`MISSING_SHARES`), read off the robustness sweep's `missing` curves (at
    100%, every sample but those in which it is the only modality present)."""
    index = {share: LEVELS_WITH_CLEAN.index(share / 100) for share in MISSING_SHARES}
    return {
        m: {str(share): c["missing"][i] for share, i in index.items()}
        for m, c in curves.items()
        if "missing" in c
    }


def measure_step(
    prepared: Prepared,
    entry: Entry,
    *,
    seed: int,
    budget: int,
    peak: float | None,
    steps: int,
) -> dict[str, Any]:
    """FLOPs, steady-state training throughput and MFU of a fresh model of `entry`."""
    config = entry_config(prepared, entry, seed=seed, budget=budget)
    seed_everything(seed)
    model = OmnifuseModel.build(config)
    train_samples = prepared.splits["train"]
    size = min(config.train.batch_size, len(train_samples))
    count = max(1, min(4, len(train_samples) // size))
    batches = [prepared.collate(train_samples[i * size : (i + 1) * size]) for i in range(count)]
    return step_cost(model, batches, config.train, peak=peak, steps=steps).as_dict()


def _stats(values: Sequence[float | None]) -> dict[str, float | int | None]:
    """Mean and sample standard deviation (None with one seed) of the values that exist."""
    present = [v for v in values if v is not None and not math.isnan(v)]
    if not present:
        return {"mean": None, "std": None, "n": 0}
    std = statistics.stdev(present) if len(present) > 1 else None
    return {"mean": statistics.fmean(present), "std": std, "n": len(present)}


def add_effective(runs: list[dict[str, Any]]) -> None:
    """Each run's effective robustness per curve, against late fusion of the same seed."""
    reference = {r["seed"]: r for r in runs if r["label"] == REFERENCE}
    for run in runs:
        base = reference.get(run["seed"])
        run["effective_robustness"] = (
            None
            if base is None
            else {
                m: {
                    p: effective_robustness(LEVELS_WITH_CLEAN, v, base["robustness"][m][p])
                    for p, v in c.items()
                }
                for m, c in run["robustness"].items()
            }
        )


def summarise(runs: list[dict[str, Any]], labels: Sequence[str]) -> dict[str, Any]:
    """Per label: mean/std/n of each scalar, of each curve point and of each robustness score,
    and the mean relative and effective robustness over all curves."""
    summary: dict[str, Any] = {}
    for label in labels:
        mine = [r for r in runs if r["label"] == label]
        first = mine[0]
        entry: dict[str, Any] = {
            "fusion": first["fusion"],
            "width": first["width"],
            "seeds": [r["seed"] for r in mine],
        }
        entry |= {key: _stats([r[key] for r in mine]) for key in SCALARS}
        curves: dict[str, dict[str, Any]] = {}
        for m, c in first["robustness"].items():
            for p in c:
                points = [r["robustness"][m][p] for r in mine]
                curves.setdefault(m, {})[p] = {
                    "mean": [statistics.fmean(v) for v in zip(*points, strict=True)],
                    "std": [
                        statistics.stdev(v) if len(v) > 1 else None
                        for v in zip(*points, strict=True)
                    ],
                }
        entry["robustness"] = curves
        entry["missing"] = {
            m: {share: _stats([r["missing"][m][share] for r in mine]) for share in shares}
            for m, shares in first["missing"].items()
        }
        for score in ("relative_robustness", "effective_robustness"):
            if any(r[score] is None for r in mine):
                entry[score] = None
                entry[f"{score}_mean"] = None
                continue
            entry[score] = {
                m: {p: _stats([r[score][m][p] for r in mine]) for p in c}
                for m, c in first[score].items()
            }
            entry[f"{score}_mean"] = _stats(
                [statistics.fmean(v for c in r[score].values() for v in c.values()) for r in mine]
            )
        summary[label] = entry
    return summary


def winner(summary: dict[str, Any]) -> dict[str, Any] | None:
    """The fusion with the best mean accuracy, with its margin over each unimodal baseline
    and over late fusion (differences of means)."""
    fused = {k: v for k, v in summary.items() if v["fusion"]["type"] != "unimodal"}
    scored = {
        k: v["accuracy"]["mean"] for k, v in fused.items() if v["accuracy"]["mean"] is not None
    }
    if not scored:
        return None
    best = max(scored, key=lambda k: scored[k])
    unimodal = {
        k: v["accuracy"]["mean"] for k, v in summary.items() if v["fusion"]["type"] == "unimodal"
    }
    return {
        "label": best,
        "accuracy": summary[best]["accuracy"],
        "over_unimodal": {k: scored[best] - v for k, v in unimodal.items() if v is not None},
        "best_unimodal": max(unimodal, key=lambda k: unimodal[k]) if unimodal else None,
        "over_late": scored[best] - scored[REFERENCE] if REFERENCE in scored else None,
    }


def run_bench(
    config: RunConfig,
    out: Path,
    *,
    fusions: str | Sequence[str] = "all",
    seeds: int = 3,
    budget: int = DEFAULT_BUDGET,
    task: str | None = None,
    dataset: str = "custom",
    throughput_steps: int = 10,
    peak: dict[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the benchmark of `config` and write `results.json`, `results.md` and the
    accuracy-vs-noise plots to `out`; returns the results written.

    `peak` is a `matmul_peak()` measurement to compute MFU against; by default it is measured
    here, at the config's thread count, before anything else runs."""
    from omnifuse.bench.report import write_results

    if seeds < 1:
        raise ConfigError(f"bench --seeds: at least 1, got {seeds}")
    task = bench_task(config, task)
    share_cores(config.train.threads, config.data.loader_workers)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if peak is None:
        peak = matmul_peak()
    prepared = prepare(config, progress=progress)
    lines = entries(fusions, sorted(prepared.config.modalities))
    seed_list = [config.train.seed + s for s in range(seeds)]
    runs, performance = _run_entries(
        prepared,
        lines,
        seeds=seed_list,
        budget=budget,
        task=task,
        perturb_as=PERTURB_AS.get(dataset),
        peak=peak["flops_per_s"],
        throughput_steps=throughput_steps,
        progress=progress,
    )
    add_effective(runs)
    labels = [entry.label for entry in lines]
    summary = summarise(runs, labels)
    results: dict[str, Any] = {
        "settings": _settings(
            config,
            prepared,
            dataset=dataset,
            task=task,
            labels=labels,
            seeds=seed_list,
            budget=budget,
        ),
        "config": prepared.config.model_dump(mode="json"),
        "matmul_peak": peak,
        "runs": runs,
        "performance": performance,
        "summary": summary,
        "winner": winner(summary),
    }
    results["settings"]["seconds"] = round(time.perf_counter() - started, 1)
    write_results(results, out)
    return results


def _run_entries(
    prepared: Prepared,
    lines: Sequence[Entry],
    *,
    seeds: Sequence[int],
    budget: int,
    task: str,
    perturb_as: dict[str, str] | None,
    peak: float | None,
    throughput_steps: int,
    progress: bool,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every (entry, seed) trained and evaluated, in that order, and each entry's step cost
    measured once at the first seed: (runs, performance by label)."""
    runs: list[dict[str, Any]] = []
    performance: dict[str, Any] = {}
    bar = tqdm(total=len(lines) * len(seeds), desc="bench", unit="run", disable=not progress)
    for entry in lines:
        for seed in seeds:
            bar.set_postfix_str(f"{entry.label}, seed {seed}")
            run = run_one(
                prepared,
                entry,
                seed=seed,
                budget=budget,
                task=task,
                perturb_as=perturb_as,
                progress=progress,
            )
            runs.append(run)
            bar.update()
        performance[entry.label] = measure_step(
            prepared,
            entry,
            seed=seeds[0],
            budget=budget,
            peak=peak,
            steps=throughput_steps,
        )
    bar.close()
    return runs, performance


def _settings(
    config: RunConfig,
    prepared: Prepared,
    *,
    dataset: str,
    task: str,
    labels: Sequence[str],
    seeds: Sequence[int],
    budget: int,
) -> dict[str, Any]:
    """What the benchmark ran with and on (results.json's `settings`); `seconds` is left
    None for the caller to fill in once everything has run."""
    return {
        "dataset": dataset,
        "task": task,
        "metric": "accuracy",
        "fusions": list(labels),
        "seeds": list(seeds),
        "budget": budget,
        "epochs": config.train.epochs,
        "batch_size": config.train.batch_size,
        "threads": torch.get_num_threads(),
        "levels": list(LEVELS_WITH_CLEAN),
        "noise_levels": list(LEVELS),
        "reference": REFERENCE,
        "splits": {name: len(s) for name, s in prepared.splits.items()},
        "evaluated_on": prepared.evaluation,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "seconds": None,
    }
