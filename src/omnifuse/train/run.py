"""Run a whole config: load and fit the data, train, evaluate, write the model and reports.

metrics = run(load_config("world.yaml"), Path("runs/world"))
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from omnifuse.config import RunConfig
from omnifuse.data.batch import Collate, Sample
from omnifuse.data.dataset import fit_config, load_samples, make_collate, read_splits
from omnifuse.errors import DataError
from omnifuse.eval.evaluate import evaluate, predict
from omnifuse.eval.metrics import confusion_matrix
from omnifuse.eval.plots import plot_confusion, plot_training
from omnifuse.model import OmnifuseModel
from omnifuse.tasks.classification import Classification
from omnifuse.train.loop import History, fit, seed_everything

METRICS_FILE = "metrics.json"


@dataclass
class Prepared:
    """A fitted config and its preprocessed samples per split."""

    config: RunConfig
    splits: dict[str, list[Sample]]
    collate: Collate

    @property
    def evaluation(self) -> str:
        """The split that final metrics are reported on: test, or val when there is no test."""
        return "test" if self.splits["test"] else "val"


@dataclass
class Trained:
    model: OmnifuseModel
    history: History
    metrics: dict[str, dict[str, float]]
    train_seconds: float


def prepare(config: RunConfig, *, progress: bool = True) -> Prepared:
    """Read the manifest, fit statistics on the training split, preprocess every split."""
    manifest, indices = read_splits(config)
    config = fit_config(config, manifest, indices["train"])
    model = OmnifuseModel.build(config)  # its modalities and tasks know how to load a row
    splits = {
        name: load_samples(
            manifest,
            rows,
            model.modalities,
            model.task_dict(),
            progress=progress,
            desc=f"loading {name}",
        )
        for name, rows in indices.items()
    }
    if not splits["test"] and not splits["val"]:
        raise DataError(f"{manifest.path.name}: no rows in the val or test split to evaluate on")
    return Prepared(config, splits, make_collate(splits["train"]))


def train(
    prepared: Prepared,
    *,
    modalities: Sequence[str] | None = None,
    progress: bool = True,
    desc: str = "training",
) -> Trained:
    """Build a fresh model from the prepared config (optionally seeing only `modalities`),
    train it and evaluate it on the evaluation split."""
    config = prepared.config
    splits = prepared.splits
    if modalities is not None:
        config = config.without_modalities(list(modalities))
        splits = {name: [s.only(modalities) for s in samples] for name, samples in splits.items()}
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    seed_everything(config.train.seed)
    model = OmnifuseModel.build(config)

    def validate(model: OmnifuseModel) -> dict[str, float]:
        metrics = evaluate(model, splits["val"], prepared.collate)
        return {f"{task}/{key}": value for task, m in metrics.items() for key, value in m.items()}

    start = time.perf_counter()
    history = fit(
        model,
        splits["train"],
        config.train,
        collate=prepared.collate,
        validate=validate if splits["val"] else None,
        progress=progress,
        desc=desc,
    )
    seconds = time.perf_counter() - start
    metrics = evaluate(model, splits[prepared.evaluation], prepared.collate)
    return Trained(model, history, metrics, seconds)


def write_reports(trained: Trained, prepared: Prepared, out: Path) -> None:
    """The model files, training curves and a confusion matrix per classification task."""
    out.mkdir(parents=True, exist_ok=True)
    trained.model.save_pretrained(out)
    plot_training(trained.history, out / "training_curves.png")
    samples = prepared.splits[prepared.evaluation]
    predictions = predict(trained.model, samples, prepared.collate)
    for name, task in trained.model.task_dict().items():
        if isinstance(task, Classification):
            p = predictions[name]
            matrix = confusion_matrix(p.prediction.argmax(-1), p.target, len(task.classes))
            title = f"{name} ({prepared.evaluation} split)"
            plot_confusion(matrix, task.classes, title, out / f"confusion_{name}.png")


def run(
    config: RunConfig, out: Path, *, baselines: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Train and evaluate `config`, write everything to `out`, return the metrics written.

    With `baselines`, also train one model per single modality with the same settings.
    """
    prepared = prepare(config, progress=progress)
    trained = train(prepared, progress=progress)
    write_reports(trained, prepared, out)
    metrics: dict[str, Any] = {
        "tasks": trained.metrics,
        "train_seconds": round(trained.train_seconds, 2),
        "samples": sum(len(s) for s in prepared.splits.values()),
        "splits": {name: len(s) for name, s in prepared.splits.items()},
        "evaluated_on": prepared.evaluation,
    }
    if baselines:
        metrics["baselines"] = {}
        for modality in sorted(prepared.config.modalities):
            alone = train(
                prepared, modalities=[modality], progress=progress, desc=f"only {modality}"
            )
            metrics["baselines"][modality] = {
                "tasks": alone.metrics,
                "train_seconds": round(alone.train_seconds, 2),
            }
    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics
