"""`omnifuse tune`'s library side: a fusion search over a config, resumable, each trial a run
directory, reported as a Pareto front and a best config.

    summary = tune(load_config("world.yaml"), Path("tune-world"), budget=1800, trials=None)

The data is prepared once (loaded, fitted on the training split); every trial then trains
its own config (the base config with the trial's choices, `space.py`) on it, exactly as
`omnifuse bench` does, so that trials differ only by what the search chose.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from omnifuse.bench.runner import bench_task
from omnifuse.config import RunConfig
from omnifuse.train.run import prepare
from omnifuse.tune.pruning import make_pruner
from omnifuse.tune.report import best_record, options, write_report
from omnifuse.tune.space import SearchSpace, first_trials, read_recommendation
from omnifuse.tune.study import Search, done
from omnifuse.tune.trial import TrialRunner

log = logging.getLogger(__name__)


# where a search runs, not what it searches: free to change between sessions
PLACEMENT = {"train": ("threads", "device"), "data": ("workers",)}


def signature(config: RunConfig, task: str, space: SearchSpace) -> dict[str, Any]:
    """What identifies a search: a folder is resumed only by the same one. The budget, the
    trial count, the pruner, the seed and where it runs (threads, device, data workers) may
    change between sessions."""
    data = config.model_dump(mode="json")
    for section, keys in PLACEMENT.items():
        for key in keys:
            data[section].pop(key, None)
    return {"config": data, "task": task, "space": space.describe()}


def records(search: Search) -> list[dict[str, Any]]:
    """The records of the trials that trained (completed or pruned), in trial order."""
    return [t.user_attrs["record"] for t in search.trials() if "record" in t.user_attrs]


def state(search: Search, stopped: str | None) -> dict[str, Any]:
    """The search's state for its report: time spent, trial counts, failures, the analysis
    it started from and why it stopped (None while running)."""
    trials = search.trials()
    study = search.study.user_attrs
    return {
        "seconds": round(search.elapsed(), 1),
        "trials_done": sum(done(t) for t in trials),
        "trials_killed": study.get("killed", []),
        "failed": [
            {"number": t.number, "params": t.params, "error": t.user_attrs["error"]}
            for t in trials
            if t.state == TrialState.FAIL and "error" in t.user_attrs
        ],
        "recommendation": study.get("recommendation"),
        "stopped": stopped,
    }


def describe(trial: FrozenTrial, search: Search, budget: float | None) -> str:
    """One line on a trial just told, with the best so far and the time spent."""
    spent = f"{search.elapsed() / 60:.1f}" + (f"/{budget / 60:.1f}" if budget else "") + " min"
    if "record" not in trial.user_attrs:
        return f"trial {trial.number} failed: {trial.user_attrs.get('error')} [{spent}]"
    r = trial.user_attrs["record"]
    how = "" if r["state"] == "complete" else f", pruned at epoch {r['epochs_trained']}"
    best = best_record(records(search))
    ahead = f"best {best['value']:.4f} (trial {best['number']})" if best else "none complete yet"
    return (
        f"trial {r['number']} {r['fusion']} ({options(r)}): val {r['value']:.4f}{how}, "
        f"{r['model_parameters']:,} params, {r['latency_ms']:.2f} ms; {ahead} [{spent}]"
    )


def tune(
    config: RunConfig,
    out: Path,
    *,
    budget: float | None,
    trials: int | None,
    task: str | None = None,
    space: SearchSpace | None = None,
    analysis: Path | None = None,
    pruner: str = "halving",
    min_epochs: int | None = None,
    seed: int = 0,
    progress: bool = True,
    echo: Callable[[str], None] = log.info,
) -> dict[str, Any]:
    """Search `space` on `config` into `out` (or resume the search there) until `trials`
    trials are done or `budget` seconds are spent over every session; returns the summary
    written to pareto.json. With `analysis` (an `omnifuse analyze` analysis.json) the
    recommended fusions are tried first, one trial each, at the config's learning rate and
    modality dropout; the sampler still draws from every fusion of `space` after them.
    `echo` receives one line per trial."""
    task = bench_task(config, task, command="tune")
    space = space or SearchSpace()
    recommendation = read_recommendation(analysis, space) if analysis is not None else None
    stopper = make_pruner(pruner, epochs=config.train.epochs, min_epochs=min_epochs)
    with Search.open(out, signature(config, task, space), pruner=stopper, seed=seed) as search:
        if recommendation is not None and not search.study.user_attrs.get("enqueued"):
            search.study.set_user_attr("recommendation", recommendation)
            search.enqueue(first_trials(recommendation["fusions"], space, config))
        finished = len(search.finished())
        if finished:
            echo(f"resuming the search in {out}: {finished} trials done")
        prepared = prepare(config, progress=progress)
        runner = TrialRunner(prepared, out, task=task, space=space, progress=progress)

        def after(trial: FrozenTrial) -> None:
            echo(describe(trial, search, budget))
            write_report(out, records(search), base=config, task=task, state=state(search, None))

        stopped = search.run(runner, space.suggest, budget=budget, trials=trials, after=after)
        return write_report(
            out, records(search), base=config, task=task, state=state(search, stopped)
        )
