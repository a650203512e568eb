"""Where the analysis' per-modality embeddings come from: one model trained per modality on
every task of a config that runs on it alone (the run's single-modality baselines), or the
encoders of a saved model; and the classification target they are analysed for.

    target = resolve_target(config, "synergy")       # checked before any training
    embedded = train_encoders(config, progress=False)
    embedded.train["image"].vectors, embedded.heldout["image"].vectors
    embedded.labels["synergy"], embedded.targets["synergy"].classes

Clusters are fitted on the training rows; the decomposition is estimated on the held-out
rows (validation and test), which the encoders never trained on: an encoder that memorised
its training labels would otherwise add information that does not generalise.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from omnifuse.analysis.embeddings import Embedding, class_labels, embed
from omnifuse.config import RunConfig
from omnifuse.errors import ConfigError, OmnifuseError
from omnifuse.model import OmnifuseModel
from omnifuse.registry import closest
from omnifuse.train.run import Prepared, prepare, train

HELDOUT = ("val", "test")


@dataclass(frozen=True)
class Target:
    """The classification task analysed: its name, the column it reads, its classes."""

    task: str
    column: str
    classes: list[str]


@dataclass
class Embedded:
    """Per-modality embeddings of the training rows (to fit clusters on) and of the held-out
    rows (to estimate on); per classification task, its target and the held-out rows' class
    indices (-1: unlabelled); how the encoders were obtained (JSON)."""

    train: dict[str, Embedding]
    heldout: dict[str, Embedding]
    targets: dict[str, Target]
    labels: dict[str, np.ndarray]
    source: dict[str, Any] = field(default_factory=dict)


def resolve_target(config: RunConfig, target: str | None) -> Target:
    """The classification task named `target` (a task, or the column one reads), or the first
    (sorted) classification task; the config must have two modalities or more."""
    if len(config.modalities) < 2:
        names = ", ".join(sorted(config.modalities)) or "none"
        raise ConfigError(
            f"analyze: the interactions between modalities need two or more; the config has "
            f"{len(config.modalities)} ({names})"
        )
    tasks = config.model.tasks
    classification = sorted(n for n, t in tasks.items() if t.type == "classification")
    listed = ", ".join(classification) or "none"
    if target is None:
        if not classification:
            raise ConfigError("analyze: the config has no classification task to analyse")
        name = classification[0]
    elif target in tasks:
        name = target
    else:
        by_column = sorted(n for n in classification if config.task_spec(n).target == target)
        if not by_column:
            known = sorted({*tasks, *(config.task_spec(n).target for n in classification)})
            raise ConfigError(
                f"--target {target}: not a task of the config, nor a column a classification "
                f"task reads{closest(target, known)}; classification tasks: {listed}"
            )
        name = by_column[0]
    if tasks[name].type != "classification":
        raise ConfigError(
            f"--target {target}: task '{name}' is {tasks[name].type}, not classification; the "
            f"decomposition is of a class label (classification tasks: {listed})"
        )
    spec = config.task_spec(name)
    return Target(task=name, column=str(spec.target), classes=list(getattr(spec, "classes", [])))


def _targets(config: RunConfig) -> dict[str, Target]:
    """Every classification task of a fitted config, as a Target."""
    tasks = config.model.tasks
    return {
        name: resolve_target(config, name)
        for name in sorted(tasks)
        if tasks[name].type == "classification"
    }


def _embedded(
    prepared: Prepared, models: dict[str, OmnifuseModel], source: dict[str, Any]
) -> Embedded:
    """Each modality embedded by its model, on the training and the held-out rows, and the
    held-out labels of every classification task."""
    train_rows: dict[str, Embedding] = {}
    heldout: dict[str, Embedding] = {}
    for name, model in sorted(models.items()):
        train_rows[name] = embed(
            model, prepared.splits["train"], prepared.collate, modalities=[name]
        )[name]
        parts = [
            embed(model, prepared.splits[s], prepared.collate, modalities=[name])[name]
            for s in HELDOUT
        ]
        heldout[name] = Embedding(
            vectors=np.concatenate([p.vectors for p in parts]),
            present=np.concatenate([p.present for p in parts]),
        )
    targets = _targets(prepared.config)
    labels = {
        name: np.concatenate([class_labels(prepared.splits[s], name) for s in HELDOUT])
        for name in targets
    }
    return Embedded(train_rows, heldout, targets, labels, source)


def train_encoders(config: RunConfig, *, progress: bool = True) -> Embedded:
    """Train one model per modality (`train(prepared, modalities=[m])`, the config's own
    settings and every task that runs on that modality alone) and embed with each."""
    prepared = prepare(config, progress=progress)
    models: dict[str, OmnifuseModel] = {}
    metrics: dict[str, Any] = {}
    start = time.perf_counter()
    for name in sorted(prepared.config.modalities):
        trained = train(prepared, modalities=[name], progress=progress, desc=f"only {name}")
        models[name] = trained.model
        metrics[name] = {"tasks": trained.metrics, "train_seconds": round(trained.train_seconds, 2)}
    source = {
        "encoders": "trained",
        "epochs": prepared.config.train.epochs,
        "train_seconds": round(time.perf_counter() - start, 2),
        "unimodal": metrics,
        "splits": {name: len(s) for name, s in prepared.splits.items()},
    }
    return _embedded(prepared, models, source)


def saved_encoders(model: OmnifuseModel, directory: Path, *, progress: bool = True) -> Embedded:
    """The encoders of `model` (saved in `directory`), each modality embedded alone, on the
    data the model was trained with."""
    prepared = prepare(model.config, progress=progress)
    source = {
        "encoders": "saved",
        "model": str(directory),
        "splits": {name: len(s) for name, s in prepared.splits.items()},
    }
    models = dict.fromkeys(sorted(model.config.modalities), model)
    return _embedded(prepared, models, source)


def load_saved(directory: Path) -> OmnifuseModel:
    """The model in `directory`, or a one-line error when there is none."""
    if not directory.is_dir():
        raise OmnifuseError(f"--model {directory}: no such folder")
    return OmnifuseModel.from_pretrained(directory)  # each damage is its own line
