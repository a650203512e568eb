"""Real searches on the tiny world: trials are run directories, the report and best.yaml,
the analysis's fusions first, and a pruned trial stopped after its first epoch."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from omnifuse.config import RunConfig, load_config, parse_config
from omnifuse.errors import ConfigError
from omnifuse.inference import evaluate_saved
from omnifuse.model import OmnifuseModel
from omnifuse.train.run import prepare
from omnifuse.tune.report import BEST_FILE
from omnifuse.tune.search import signature, tune
from omnifuse.tune.space import SearchSpace
from omnifuse.tune.study import Search, trial_dir
from omnifuse.tune.trial import TrialRunner
from tests.conftest import tiny_config


def small(world: Path, **train: object) -> RunConfig:
    """Image and audio, one classification task, one epoch, one thread."""
    data = tiny_config(world, **{"epochs": 1, "threads": 1, **train})
    data["modalities"] = {k: data["modalities"][k] for k in ("image", "audio")}
    data["model"]["tasks"] = {"scene": data["model"]["tasks"]["scene"]}
    return parse_config(data)


SPACE = SearchSpace(fusions=("gmu", "late", "early"), fusion_parameters=(2_000, 6_000))


@pytest.fixture(scope="module")
def searched(world: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """Two trials started from a hand-written analysis that recommends gmu, then late."""
    out = tmp_path_factory.mktemp("tune") / "search"
    analysis = out.parent / "analysis.json"
    recommendation = {"family": "late", "fusions": ["gmu", "tensor", "late"], "why": "additive"}
    analysis.write_text(json.dumps({"recommendation": recommendation, "pid": {}}))
    summary = tune(
        small(world), out, budget=None, trials=2, space=SPACE, analysis=analysis, progress=False
    )
    return out, summary


def test_every_trial_is_a_run_directory_scored_on_validation(searched: tuple[Path, dict]):
    out, _ = searched
    trials = json.loads((out / "trials.json").read_text())
    assert [t["number"] for t in trials] == [0, 1]
    for record in trials:
        folder = out / record["dir"]
        assert folder == trial_dir(out, record["number"])
        assert {"config.json", "model.safetensors", "metrics.json", "report.md"} <= {
            p.name for p in folder.iterdir()
        }
        assert json.loads((folder / "trial.json").read_text()) == record
        model = OmnifuseModel.from_pretrained(folder)
        validation = evaluate_saved(model, None, split="val")["tasks"]["scene"]["accuracy"]
        assert record["value"] == pytest.approx(validation)  # the final model's
        assert (
            record["evaluation"]
            == json.loads((folder / "metrics.json").read_text())["tasks"]["scene"]
        )
        assert record["model_parameters"] == sum(p.numel() for p in model.parameters())
        assert record["fusion_parameters"] == sum(p.numel() for p in model.fusion.parameters())
        assert 0 < record["latency_ms"] < 5_000
        assert record["epochs_trained"] == record["epochs"] == 1
        assert model.config.model.fusion.type == record["fusion"]
        assert model.config.model.fusion.options["budget"] == record["params"]["fusion_parameters"]
        assert model.config.train.lr == record["params"]["lr"]


def test_the_analysis_fusions_run_first(searched: tuple[Path, dict]):
    out, summary = searched
    trials = json.loads((out / "trials.json").read_text())
    assert [r["fusion"] for r in trials] == ["gmu", "late"]
    for record in trials:  # at the config's learning rate and modality dropout
        assert record["params"]["lr"] == 3e-3 and record["params"]["modality_dropout"] == 0.0
    assert summary["recommendation"] == {"family": "late", "fusions": ["gmu", "late"],
                                         "why": "additive"}  # fmt: skip


def test_the_report_and_best_config(searched: tuple[Path, dict], world: Path):
    out, summary = searched
    trials = json.loads((out / "trials.json").read_text())
    best = max(trials, key=lambda r: (r["value"], -r["model_parameters"]))
    assert summary["best"]["number"] == best["number"]
    assert summary["stopped"] == "trials" and summary["trials_done"] == 2
    assert json.loads((out / "pareto.json").read_text()) == summary
    assert best["number"] in [r["number"] for r in summary["front"]]
    table = (out / "pareto.md").read_text()
    assert (
        "## Pareto front" in table
        and f"| {best['number']} | complete | {best['fusion']} |" in table
    )
    assert (out / "pareto.png").stat().st_size > 0
    config = load_config(out / BEST_FILE)  # what `omnifuse train best.yaml` reads
    trained = OmnifuseModel.from_pretrained(out / best["dir"]).config
    assert config.model.fusion == trained.model.fusion
    assert config.model.modality_dropout == trained.model.modality_dropout
    assert config.train.lr == trained.train.lr
    assert config.modalities["image"].mean is None  # unfitted: train refits it
    assert config.data == small(world).data
    assert (out / BEST_FILE).read_text().startswith(f"# omnifuse tune: trial {best['number']}")


def test_a_pruned_trial_stops_after_its_epoch_and_is_still_a_run(world: Path, tmp_path: Path):
    config = small(world, epochs=3)
    out = tmp_path / "pruned"
    prepared = prepare(config, progress=False)
    space = SearchSpace(fusions=("gmu",), fusion_parameters=(2_000, 2_000))
    never_enough = optuna.pruners.ThresholdPruner(lower=1.01)  # accuracy never reaches it
    with Search.open(out, signature(config, "scene", space), pruner=never_enough) as search:
        runner = TrialRunner(prepared, out, task="scene", space=space, progress=False)
        search.run(runner, space.suggest, budget=None, trials=1)
        (trial,) = search.trials()
    assert trial.state == TrialState.PRUNED
    record = trial.user_attrs["record"]
    assert record["state"] == "pruned" and record["epochs_trained"] == 1 and record["epochs"] == 3
    metrics = json.loads((out / "trials" / "0000" / "metrics.json").read_text())
    assert metrics["epochs_trained"] == 1
    assert len((out / "trials" / "0000" / "epochs.csv").read_text().splitlines()) == 2  # 1 epoch
    assert trial.intermediate_values == {1: pytest.approx(record["value"])}


def test_no_validation_split_is_refused(world: Path, tmp_path: Path):
    config = small(world)
    data = config.model_dump(mode="json")
    data["data"] |= {"split_column": "no_such_column", "val_fraction": 0.0}
    prepared = prepare(parse_config(data), progress=False)
    assert not prepared.splits["val"]
    with pytest.raises(ConfigError, match="no validation split"):
        TrialRunner(replace(prepared), tmp_path, task="scene", space=SPACE, progress=False)
