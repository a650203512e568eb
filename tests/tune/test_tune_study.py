"""The search machinery with objectives whose best point is known: the study finds it, prunes
a poor learning curve, counts its budget across sessions and resumes what a kill left."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from omnifuse.errors import OmnifuseError
from omnifuse.train.loop import History
from omnifuse.tune.pruning import EpochPruning, make_pruner
from omnifuse.tune.space import SearchSpace
from omnifuse.tune.study import Outcome, Search, done, parse_duration, trial_dir

SIGNATURE = {"config": {"toy": 1}, "task": "scene", "space": {}}
# the toy space: one strategy is better than the others, and every one is best at lr 3e-3
QUALITY = {"early": 0.7, "late": 0.5, "perceiver": 0.9}
BEST_LR = 3e-3


def toy(trial: optuna.Trial, params: dict[str, Any]) -> Outcome:
    value = QUALITY[params["fusion"]] - 0.1 * math.log10(params["lr"] / BEST_LR) ** 2
    return Outcome(value=value, record={"number": trial.number, "state": "complete"})


def test_the_search_finds_the_best_point_of_a_toy_space(tmp_path: Path):
    space = SearchSpace(fusions=("early", "late", "perceiver"), lr=(1e-4, 1e-1))
    with Search.open(tmp_path / "toy", SIGNATURE, seed=0) as search:
        stopped = search.run(toy, space.suggest, budget=None, trials=40)
        best = search.study.best_trial
    assert stopped == "trials"
    assert len([t for t in search.trials() if t.state == TrialState.COMPLETE]) == 40
    assert best.params["fusion"] == "perceiver"
    assert abs(math.log10(best.params["lr"] / BEST_LR)) < 0.25  # within a factor of 1.8
    assert best.value == pytest.approx(0.9, abs=0.01)


def curve(values: list[float], pruner_key: str = "scene/accuracy"):
    """An objective whose trials 'train' through the given per-epoch validation values,
    reported by the same `EpochPruning` a real trial uses."""

    def objective(trial: optuna.Trial, params: dict[str, Any]) -> Outcome:
        scale = 1.0 if params["fusion"] == "perceiver" else 0.3  # late learns a third as well
        stop, history = EpochPruning(trial, pruner_key, epochs=len(values)), History()
        for epoch, value in enumerate(values, start=1):
            history.epochs.append({"epoch": epoch, pruner_key: scale * value})
            if stop(history):
                break
        state = "pruned" if stop.pruned else "complete"
        return Outcome(stop.last or 0.0, stop.pruned, {"epochs_trained": epoch, "state": state})

    return objective


def test_successive_halving_stops_a_poor_trial_at_its_first_rung(tmp_path: Path):
    space = SearchSpace(fusions=("perceiver", "late"))
    pruner = make_pruner("halving", epochs=9, min_epochs=1)
    with Search.open(tmp_path / "s", SIGNATURE, pruner=pruner) as search:
        search.enqueue([{"fusion": "perceiver"}, {"fusion": "late"}])
        search.run(curve([0.3, 0.5, 0.6, 0.7, 0.8, 0.8, 0.9, 0.9, 0.9]), space.suggest,
                   budget=None, trials=2)  # fmt: skip
        good, poor = search.trials()
    assert good.state == TrialState.COMPLETE and good.user_attrs["record"]["epochs_trained"] == 9
    assert good.value == pytest.approx(0.9)
    assert poor.state == TrialState.PRUNED
    assert poor.user_attrs["record"] == {"epochs_trained": 1, "state": "pruned"}
    assert poor.intermediate_values == {1: pytest.approx(0.09)}
    assert done(poor)


def test_the_first_rung_defaults_to_half_the_epochs():
    assert make_pruner("halving", epochs=12)._min_resource == 6
    assert make_pruner("hyperband", epochs=2)._min_resource == 1
    with pytest.raises(OmnifuseError, match="--min-epochs: expected 1 to 4"):
        make_pruner("halving", epochs=4, min_epochs=5)


def test_budget_strings():
    assert parse_duration("90s") == 90
    assert parse_duration("30m") == 1800
    assert parse_duration("2h") == 7200
    assert parse_duration("1h30m") == 5400
    assert parse_duration("45") == 45
    for bad in ("soon", "30 minutes", "0m", "-5m", "m"):
        with pytest.raises(OmnifuseError, match="tune --budget"):
            parse_duration(bad)


def slow(trial: optuna.Trial, params: dict[str, Any]) -> Outcome:
    time.sleep(0.3)
    return Outcome(value=0.5, record={"state": "complete"})


def test_the_budget_counts_over_every_session(tmp_path: Path):
    space = SearchSpace(fusions=("gmu",))
    with Search.open(tmp_path / "b", SIGNATURE) as search:
        assert search.run(slow, space.suggest, budget=0.5, trials=None) == "budget"
        first = len(search.trials())
    assert first == 2  # started at 0 s and 0.3 s; the second ran past the budget
    spent = json.loads((tmp_path / "b" / "search.json").read_text())["seconds"]
    assert spent >= 0.6
    with Search.open(tmp_path / "b", SIGNATURE) as search:
        assert search.run(slow, space.suggest, budget=0.5, trials=None) == "budget"
        assert len(search.trials()) == first  # nothing left to spend
        assert search.run(slow, space.suggest, budget=2.0, trials=3) == "trials"
        assert len(search.finished()) == 3


def test_an_interrupted_trial_runs_again_and_finished_ones_do_not(tmp_path: Path):
    out = tmp_path / "k"
    space = SearchSpace(fusions=("early", "late", "perceiver"))
    with Search.open(out, SIGNATURE) as search:
        search.run(toy, space.suggest, budget=None, trials=2)
        interrupted = search.study.ask()  # a trial a kill stops: never told
        choices = space.suggest(interrupted)
        trial_dir(out, interrupted.number).mkdir(parents=True)
    with Search.open(out, SIGNATURE) as search:
        trials = search.trials()
        assert [t.state for t in trials] == [TrialState.COMPLETE] * 2 + [TrialState.FAIL] + [
            TrialState.WAITING
        ]
        assert search.study.user_attrs["killed"] == [2]
        assert not trial_dir(out, 2).exists()
        assert len(search.finished()) == 2
        search.run(toy, space.suggest, budget=None, trials=4)
        trials = search.trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2 + [TrialState.FAIL] + [
        TrialState.COMPLETE
    ] * 2
    assert trials[3].params == choices  # redone with the same choices
    assert trials[4].params != choices


def open_and_close(out: Path, signature: dict[str, Any]) -> None:
    with Search.open(out, signature):
        pass


def test_a_folder_is_resumed_only_by_its_own_search(tmp_path: Path):
    out = tmp_path / "s"
    with (
        Search.open(out, SIGNATURE),
        pytest.raises(OmnifuseError, match="another omnifuse tune is working"),
    ):
        open_and_close(out, SIGNATURE)
    open_and_close(out, SIGNATURE)  # the lock went with the first
    other = {**SIGNATURE, "task": "synergy"}
    with pytest.raises(OmnifuseError, match=r"holds a different search \(its task differs\)"):
        open_and_close(out, other)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.json").write_text("{}")
    with pytest.raises(OmnifuseError, match="not empty and not a search"):
        open_and_close(tmp_path / "run", SIGNATURE)


def test_a_project_error_fails_the_trial_and_the_search_goes_on(tmp_path: Path):
    def diverges(trial: optuna.Trial, params: dict[str, Any]) -> Outcome:
        if trial.number == 0:
            raise OmnifuseError("training diverged at epoch 1, step 3: loss is nan")
        return Outcome(value=0.4, record={"state": "complete"})

    with Search.open(tmp_path / "e", SIGNATURE) as search:
        search.run(diverges, SearchSpace(fusions=("gmu",)).suggest, budget=None, trials=2)
        first, second = search.trials()
    assert first.state == TrialState.FAIL and "diverged" in first.user_attrs["error"]
    assert second.state == TrialState.COMPLETE
