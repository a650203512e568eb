"""The search space: choices per strategy, their overrides, ranges and the analysis file."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from omnifuse.config import load_config
from omnifuse.errors import ConfigError
from omnifuse.tune.space import SearchSpace, parse_range, read_recommendation, searchable_fusions


def draw(space: SearchSpace, **fixed: object) -> dict[str, object]:
    """One trial's choices with `fixed` ones set, the rest drawn by a seeded random sampler."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    study.enqueue_trial(dict(fixed))
    return space.suggest(study.ask())


def test_every_strategy_but_unimodal_is_searched():
    assert "unimodal" not in searchable_fusions()
    assert {"early", "late", "perceiver", "gmu", "tensor"} <= set(searchable_fusions())


def test_choices_are_conditional_on_the_strategy():
    space = SearchSpace()
    perceiver = draw(space, fusion="perceiver")
    assert set(perceiver) == {
        "fusion",
        "fusion_parameters",
        "perceiver.depth",
        "perceiver.latents",
        "modality_dropout",
        "lr",
    }
    assert perceiver["perceiver.latents"] in (8, 16, 32)
    assert 1 <= perceiver["perceiver.depth"] <= 3  # type: ignore[operator]
    assert 20_000 <= perceiver["fusion_parameters"] <= 300_000  # type: ignore[operator]
    assert 5e-4 <= perceiver["lr"] <= 1e-2  # type: ignore[operator]
    assert set(draw(space, fusion="gmu")) == {
        "fusion",
        "fusion_parameters",
        "modality_dropout",
        "lr",
    }
    assert "late.combine" in draw(space, fusion="late")


def test_overrides_make_a_config_that_builds_the_choices():
    params = {
        "fusion": "perceiver",
        "fusion_parameters": 40_000,
        "perceiver.depth": 1,
        "perceiver.latents": 8,
        "modality_dropout": 0.25,
        "lr": 0.0031,
    }
    config = load_config("preset:world-demo", SearchSpace.overrides(params))
    assert config.model.fusion.type == "perceiver"
    assert config.model.fusion.options == {"budget": 40_000, "depth": 1, "latents": 8}
    assert config.model.modality_dropout == 0.25
    assert config.train.lr == 0.0031


def test_ranges_and_fusions_are_checked():
    assert parse_range("1000:5000", "--x", int) == (1000, 5000)
    assert parse_range("150000", "--x", int) == (150_000, 150_000)
    assert parse_range("1e-4:3e-3", "--x", float) == (1e-4, 3e-3)
    with pytest.raises(ConfigError, match="--lr: expected MIN:MAX or one number, got 'fast'"):
        parse_range("fast", "--lr", float)
    with pytest.raises(ConfigError, match=r"--lr: expected 0 < MIN <= MAX, got 0.01:0.001"):
        SearchSpace(lr=(0.01, 0.001))
    with pytest.raises(
        ConfigError, match=r"unknown fusion 'perciever' \(did you mean 'perceiver'\?\)"
    ):
        SearchSpace(fusions=("perciever",))
    with pytest.raises(ConfigError, match="unknown fusion 'unimodal'"):
        SearchSpace(fusions=("unimodal",))


def write(path: Path, content: object) -> Path:
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def test_the_recommendation_keeps_the_fusions_in_the_space(tmp_path: Path):
    analysis = {
        "recommendation": {"family": "interaction", "fusions": ["perceiver", "early", "perceiver"]},
        "pid": {"synergy": 0.4},
    }
    space = SearchSpace(fusions=("early", "late", "gmu"))
    got = read_recommendation(write(tmp_path / "analysis.json", analysis), space)
    assert got == {"family": "interaction", "fusions": ["early"], "why": ""}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ([1, 2], "no 'recommendation' mapping"),
        ({"recommendation": {"family": "early", "fusions": ["late"]}}, "recommendation.family"),
        ({"recommendation": {"family": "late", "fusions": []}}, "recommendation.fusions"),
        ({"recommendation": {"family": "late", "fusions": [3]}}, "recommendation.fusions"),
        ({"recommendation": {"family": "late", "fusions": ["tensor"]}}, "none of the recommended"),
    ],
)
def test_a_malformed_analysis_is_one_line(tmp_path: Path, content: object, message: str):
    path = write(tmp_path / "analysis.json", content)
    with pytest.raises(ConfigError, match=message) as error:
        read_recommendation(path, SearchSpace(fusions=("late", "gmu")))
    assert str(error.value).startswith(str(path)) and "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="cannot read the analysis"):
        read_recommendation(tmp_path / "absent.json", SearchSpace())
