"""One trial of a search: the base config with the trial's choices, trained on data prepared
once for every trial into a normal run directory, OUT/trials/NNNN (`omnifuse eval` reads it),
scored on the validation split and measured: parameters and inference latency.

    runner = TrialRunner(prepared, out, task="scene", space=space)
    outcome = runner(trial, space.suggest(trial))   # outcome.value: validation accuracy
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna

from omnifuse.bench.cost import inference_latency
from omnifuse.config import RunConfig, apply_overrides, parse_config
from omnifuse.data.shards import read_features
from omnifuse.errors import ConfigError
from omnifuse.fusion.base import count_parameters
from omnifuse.model import OmnifuseModel
from omnifuse.train.run import Prepared, run_prepared
from omnifuse.tune.pruning import EpochPruning
from omnifuse.tune.space import SearchSpace
from omnifuse.tune.study import Outcome, trial_dir

TRIAL_FILE = "trial.json"
METRIC = "accuracy"  # the validation metric a search maximises, of its classification task
LATENCY_SAMPLES = 16  # single-sample forward passes timed per trial (the fastest is kept)


def trial_config(base: RunConfig, overrides: list[str], source: str) -> RunConfig:
    """`base` with a trial's overrides, validated."""
    return parse_config(apply_overrides(base.model_dump(mode="json"), overrides), source)


class TrialRunner:
    """The objective of `Search.run`: trains a trial's config on `prepared` into its run
    directory under `out` and returns its validation `task/accuracy` and record."""

    def __init__(
        self, prepared: Prepared, out: Path, *, task: str, space: SearchSpace, progress: bool
    ) -> None:
        if not prepared.splits["val"]:
            raise ConfigError(
                "tune: the data has no validation split to score trials on; "
                "set data.val_fraction above 0"
            )
        self.prepared = prepared
        self.out = out
        self.task = task
        self.space = space
        self.progress = progress

    def __call__(self, trial: optuna.Trial, params: dict[str, Any]) -> Outcome:
        started = time.perf_counter()
        overrides = self.space.overrides(params)
        config = trial_config(self.prepared.config, overrides, f"tune trial {trial.number}")
        folder = trial_dir(self.out, trial.number)
        stop = EpochPruning(trial, f"{self.task}/{METRIC}", epochs=config.train.epochs)
        metrics = run_prepared(
            replace(self.prepared, config=config),
            folder,
            checkpoints=False,
            progress=self.progress,
            stop=stop,
        )
        if stop.last is None:
            raise ConfigError("tune: a trial trained without validating")  # not reached
        model = OmnifuseModel.from_pretrained(folder)  # as `omnifuse eval` will read it
        read_features(model, self.prepared.features)
        record = {
            "number": trial.number,
            "state": "pruned" if stop.pruned else "complete",
            "params": params,
            "overrides": overrides,
            "value": stop.last,
            "metric": f"{self.task}/{METRIC}",
            "epochs_trained": metrics["epochs_trained"],
            "epochs": config.train.epochs,
            "fusion": config.model.fusion.type,
            "width": getattr(model.fusion, "width", None),
            "fusion_parameters": count_parameters(model.fusion),
            "model_parameters": count_parameters(model),
            "latency_ms": round(1000 * self.latency(model), 3),
            "evaluated_on": metrics["evaluated_on"],
            "evaluation": metrics["tasks"][self.task],  # on the test split (val without one)
            "train_seconds": metrics["train_seconds"],
            "seconds": round(time.perf_counter() - started, 2),  # training, writing, measuring
            "dir": folder.relative_to(self.out).as_posix(),
        }
        (folder / TRIAL_FILE).write_text(json.dumps(record, indent=2) + "\n")
        return Outcome(value=stop.last, pruned=stop.pruned, record=record)

    def latency(self, model: OmnifuseModel) -> float:
        """Seconds to predict one sample: the fastest pass over the first validation samples,
        each a batch of one (the same samples for every trial)."""
        samples = self.prepared.splits["val"]
        count = min(LATENCY_SAMPLES, len(samples))
        batches = [self.prepared.collate([samples[i]]) for i in range(count)]
        return inference_latency(model, batches)
