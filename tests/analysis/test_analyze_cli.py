"""`omnifuse analyze` end to end on the tiny world (trained encoders and a saved model's),
what it writes, and its one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner, Result

from omnifuse.analysis.analyze import Settings, analyze, profile
from omnifuse.analysis.embeddings import Embedding
from omnifuse.analysis.sources import Embedded, Target
from omnifuse.cli import cli
from omnifuse.config import parse_config
from omnifuse.errors import ConfigError
from tests.conftest import tiny_config
from tests.test_cli_errors import one_line


def invoke(*args: object) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


def small_config(world: Path, folder: Path, modalities=("image", "tabular")) -> Path:
    """Two (or the given) modalities, the world's two labels and its score, one epoch."""
    data = tiny_config(world, epochs=1, threads=1)
    data["modalities"] = {m: data["modalities"][m] for m in modalities}
    data["model"]["tasks"] = {
        "scene": {"type": "classification", "target": "scene_class"},
        "synergy": {"type": "classification", "target": "synergy"},
        "score": {"type": "regression", "target": "score"},
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def check_written(result: dict, out: Path, pairs: list[list[str]]) -> None:
    for name in ("analysis.json", "analysis.md", "analysis.png"):
        assert (out / name).stat().st_size > 0
    assert json.loads((out / "analysis.json").read_text()) == result
    assert [p["modalities"] for p in result["pairs"]] == pairs
    recommendation = result["recommendation"]
    assert recommendation["family"] in ("late", "interaction")
    assert recommendation["fusions"] and recommendation["why"].startswith("The label")
    for p in result["pairs"]:
        parts = [p["redundancy"], *p["unique"].values(), p["synergy"]]
        assert all(0 <= x["low"] <= x["value"] <= x["high"] for x in parts)
        assert p["late_fusion_gap"]["p_value"] > 0
    table = (out / "analysis.md").read_text()
    assert " + ".join(pairs[0]) in table and recommendation["why"] in table


def test_analyze_a_config_writes_json_table_and_plot(world: Path, tmp_path: Path):
    config = small_config(world, tmp_path)
    out = tmp_path / "analysis"
    result = invoke(
        "analyze", config, "--target", "synergy", "--resamples", 5, "--out", out, "--json"
    )
    assert result.exit_code == 0, result.output
    written = json.loads(result.output.strip().splitlines()[-1])
    check_written(written, out, [["image", "tabular"]])
    assert written["target"]["task"] == "synergy"
    assert written["target"]["classes"] == ["0", "1"]
    settings = written["settings"]
    assert settings["clusters"] == 12 and settings["resamples"] == 5
    used = settings["clusters_used"]  # about 30 held-out rows: fewer clusters, a row per cell
    assert 2 <= used < 12 and used * used * 2 <= settings["labelled_rows"]
    assert set(written["source"]["unimodal"]) == {"image", "tabular"}
    # the table and the paragraph on stdout without --json; a target named by its column
    again = invoke(
        "analyze", config, "--target", "scene_class", "--resamples", 0, "--clusters", 4,
        "--out", tmp_path / "b",
    )  # fmt: skip
    assert again.exit_code == 0, again.output
    assert "| image + tabular |" in again.output and "Recommendation:" in again.output


def test_analyze_the_encoders_of_a_saved_model(aligned_model: Path, tmp_path: Path):
    out = tmp_path / "saved"
    result = invoke("analyze", "--model", aligned_model, "--resamples", 5, "--out", out, "--json")
    assert result.exit_code == 0, result.output
    written = json.loads(result.output.strip().splitlines()[-1])
    check_written(written, out, [["image", "text"]])
    assert written["target"]["task"] == "scene"  # the only classification task
    assert written["source"]["encoders"] == "saved"


def test_bad_inputs_are_one_line(world: Path, aligned_model: Path, tmp_path: Path):
    config = small_config(world, tmp_path)
    out = ["--out", tmp_path / "o"]
    one_line(invoke("analyze", config, "--target", "scen", *out), "did you mean 'scene'")
    one_line(invoke("analyze", config, "--target", "score", *out), "is regression, not classif")
    single = tmp_path / "one"
    single.mkdir()
    one_line(
        invoke("analyze", small_config(world, single, ("image",)), *out),
        "need two or more; the config has 1 (image)",
    )
    one_line(invoke("analyze", "--model", tmp_path / "gone", *out), "gone: no such folder")
    one_line(invoke("analyze", config, "--model", aligned_model, *out), "one of them")
    one_line(invoke("analyze", *out), "give CONFIG or --model DIR")
    one_line(invoke("analyze", "--model", aligned_model, "--epochs", 2, *out), "apply to a CONFIG")
    assert not (tmp_path / "o").exists()  # every one refused before any work


def test_the_library_refuses_the_same_before_training(world: Path, tmp_path: Path):
    config = parse_config(yaml.safe_load(small_config(world, tmp_path).read_text()))
    with pytest.raises(ConfigError, match="at least 2"):
        analyze(config, settings=Settings(clusters=1))
    with pytest.raises(ConfigError, match="between 0 and 1"):
        analyze(config, settings=Settings(level=1.5))
    with pytest.raises(ConfigError, match="not both"):
        analyze(config, model=tmp_path)


def test_profile_refuses_a_task_it_has_no_labels_for():
    vectors = {m: Embedding(np.zeros((4, 2), np.float32), np.ones(4, bool)) for m in ("a", "b")}
    embedded = Embedded(vectors, vectors, {"y": Target("y", "y", ["0", "1"])}, {"y": np.zeros(4)})
    with pytest.raises(ConfigError, match="'z' is not a classification task here"):
        profile(embedded, "z")
    alone = Embedded({"a": vectors["a"]}, {"a": vectors["a"]}, embedded.targets, embedded.labels)
    with pytest.raises(ConfigError, match="two or more"):
        profile(alone, "y")
