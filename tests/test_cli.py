"""The command line, in process: each command, and one clear line for each kind of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner

from omnifuse.cli import cli, list_presets, resolve_config
from tests.conftest import tiny_config


def invoke(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_help_lists_the_commands():
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("demo", "train", "data"):
        assert command in result.output


def test_data_world_writes_a_manifest(tmp_path: Path):
    result = invoke("data", "world", "--out", tmp_path / "w", "--n", "12", "--seed", "3")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["samples"] == 12
    assert pq.read_table(tmp_path / "w" / "manifest.parquet").num_rows == 12
    again = invoke("data", "world", "--out", tmp_path / "w", "--n", "12")
    assert again.exit_code == 1
    assert "already exists" in again.output


def test_train_writes_metrics_and_model(world: Path, tmp_path: Path):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_config(world, epochs=1)))
    result = invoke("train", config, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert "scene/accuracy" in result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert 0 <= metrics["tasks"]["scene"]["accuracy"] <= 1
    assert (tmp_path / "run" / "model.safetensors").is_file()


def test_demo_runs_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OMNIFUSE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "demo"
    result = invoke("demo", "--out", out, "--n", "60", "--epochs", "1", "--no-baselines")
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["tasks"]) == {"scene", "synergy", "score", "retrieval"}
    assert metrics["samples"] == 60
    assert (tmp_path / "cache" / "datasets").is_dir()  # the world is cached for the next run


def bad_input_cases(world: Path, tmp_path: Path) -> dict[str, tuple[dict, str]]:
    rows = pq.read_table(world).to_pylist()
    missing_file = [dict(r) for r in rows]
    missing_file[4]["image"] = "images/nowhere.png"
    corrupt = [dict(r) for r in rows]
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    corrupt[7]["image"] = str(tmp_path / "broken.png")
    for name, table in (("missing.jsonl", missing_file), ("corrupt.jsonl", corrupt)):
        (world.parent / name).write_text("".join(json.dumps(r) + "\n" for r in table))
    unknown_kind = tiny_config(world)
    unknown_kind["modalities"]["image"]["kind"] = "picture"
    wrong_type = tiny_config(world)
    wrong_type["train"]["batch_size"] = "many"
    return {
        "unknown kind": (unknown_kind, "modalities.image.kind: unknown modality kind 'picture'"),
        "wrong type": (wrong_type, "train.batch_size: Input should be a valid integer"),
        "missing file": (
            tiny_config(world.parent / "missing.jsonl"),
            f"missing.jsonl row 5 (id {rows[4]['id']}), column 'image': file not found: "
            "images/nowhere.png",
        ),
        "unreadable image": (
            tiny_config(world.parent / "corrupt.jsonl"),
            f"corrupt.jsonl row 8 (id {rows[7]['id']}), column 'image': cannot read image",
        ),
    }


@pytest.mark.parametrize("case", ["unknown kind", "wrong type", "missing file", "unreadable image"])
def test_bad_input_is_one_line_and_exit_code_1(world: Path, tmp_path: Path, case: str):
    config, expected = bad_input_cases(world, tmp_path)[case]
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    result = invoke("train", path, "--out", tmp_path / "run")
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("Error: ") and expected in lines[-1], result.output
    assert "Traceback" not in result.output
    debug = invoke("--debug", "train", path, "--out", tmp_path / "run")
    assert debug.exit_code == 1 and debug.exception is not None  # raised, for a traceback


def test_unknown_preset(tmp_path: Path):
    result = invoke("train", "preset:nope", "--out", tmp_path)
    assert result.exit_code == 1
    assert "unknown preset 'nope'; known: world-demo, world-tiny" in result.output


@pytest.mark.parametrize("name", list_presets())
def test_every_preset_is_a_valid_config(name: str):
    config = resolve_config(f"preset:{name}")
    assert config.data.dataset is not None and config.data.dataset.type == "world"
    assert set(config.modalities) == {"image", "text", "audio", "tabular"}
