"""The command line, in process: each command, and one clear line for each kind of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
import yaml
from click.testing import CliRunner

from omnifuse.cli import cli, print_metrics
from omnifuse.config import list_presets, load_config
from omnifuse.train.distributed import device
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
    threads = torch.get_num_threads()  # what the run set (share_cores, or OMP_NUM_THREADS)
    assert metrics["compute"] == {
        "device": str(device("auto")),  # cpu here, cuda:0 on a GPU machine
        "threads": threads,
        "processes": 1,
        "workers": 0,
    }
    assert f"(1 x {threads} threads, 0 data workers each)" in result.output


def test_baselines_without_a_task_for_a_modality_stop_before_training(world: Path, tmp_path: Path):
    data = tiny_config(world, epochs=1)
    data["model"]["tasks"] = {"retrieval": {"type": "alignment", "between": ["image", "text"]}}
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(data))
    result = invoke("train", config, "--out", tmp_path / "run", "--baselines")
    assert result.exit_code == 1
    assert result.output.strip() == (
        "Error: model.tasks: no task runs on audio alone (every task reads another modality)"
    )
    assert not (tmp_path / "run").exists()


def test_plugins_lists_every_registered_component():
    result = invoke("plugins", "--json")
    assert result.exit_code == 0, result.output
    listed = json.loads(result.output)
    assert listed["plugins"] == {}
    assert listed["registered"]["modality kind"]["image"] == "omnifuse"
    assert "perceiver" in listed["registered"]["fusion"]
    assert "reconstruction" in invoke("plugins").output


def test_demo_runs_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OMNIFUSE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "demo"
    result = invoke("demo", "--out", out, "--n", "60", "--epochs", "1", "--no-baselines")
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["tasks"]) == {"scene", "synergy", "pattern", "hum", "score", "retrieval"}
    assert metrics["samples"] == 60
    assert (tmp_path / "cache" / "datasets").is_dir()  # the world is cached for the next run


def bad_input_cases(world: Path, tmp_path: Path) -> dict[str, tuple[dict, str]]:
    rows = pq.read_table(world).to_pylist()
    missing_file = [dict(r) for r in rows]
    missing_file[4]["image"] = "images/nowhere.png"
    corrupt = [dict(r) for r in rows]
    (world.parent / "broken-cli.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    corrupt[7]["image"] = "broken-cli.png"
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
    known = "known: avmnist, avmnist-full, world-demo, world-tiny"
    assert f"unknown preset 'nope'; {known}" in result.output


@pytest.mark.parametrize("name", list_presets())
def test_every_preset_is_a_valid_config(name: str):
    config = load_config(f"preset:{name}")
    assert config.data.dataset is not None
    if name.startswith("avmnist"):
        assert config.data.dataset.type == "avmnist"
        assert set(config.modalities) == {"image", "audio"}
        sized = {"train_size", "test_size"} & set(config.data.dataset.options)
        assert sized == (set() if name == "avmnist-full" else {"train_size", "test_size"})
        return
    assert config.data.dataset.type == "world"
    assert set(config.modalities) == {"image", "text", "audio", "tabular"}


@pytest.fixture(scope="module")
def trained(world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("trained") / "run"
    config = out.parent / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_config(world, epochs=1)))
    result = invoke("train", config, "--out", out, "--set", "train.epochs=2", "--set", "seed=1")
    assert result.exit_code == 1 and "seed: unknown field" in result.output  # checked first
    result = invoke("train", config, "--out", out, "--set", "train.epochs=2")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "config.json").read_text())["train"]["epochs"] == 2
    return out


def test_eval_matches_the_run_and_reads_other_manifests(trained: Path, world: Path):
    result = invoke("eval", trained)
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    written = json.loads((trained / "metrics.json").read_text())
    assert metrics["tasks"] == written["tasks"] and metrics["data"] == "test split"
    on_all = json.loads(invoke("eval", trained, "--data", world).stdout)
    assert on_all["samples"] == 160


def test_predict_from_files_and_from_a_manifest(trained: Path, world: Path):
    rows = pq.read_table(world).to_pylist()
    images = [str(world.parent / r["image"]) for r in rows if r["image"]][:2]
    result = invoke("predict", trained, *images)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["id"] for line in lines] == images
    scene = lines[0]["scene"]
    assert scene["label"] in scene["probabilities"]
    assert abs(sum(scene["probabilities"].values()) - 1) < 1e-4
    assert isinstance(lines[0]["score"], float) and "retrieval" not in lines[0]
    from_manifest = invoke("predict", trained, world)
    assert len(from_manifest.stdout.splitlines()) == 160
    stray = invoke("predict", trained, str(world.parent / "world.json"))
    assert stray.exit_code == 1 and "not a file this model reads" in stray.output


def test_embed_gives_unit_vectors_in_the_shared_space(trained: Path, world: Path, tmp_path: Path):
    caption = tmp_path / "caption.txt"
    caption.write_text("a large red circle")
    image = next(
        str(world.parent / r["image"]) for r in pq.read_table(world).to_pylist() if r["image"]
    )
    result = invoke("embed", trained, image, caption)
    assert result.exit_code == 0, result.output
    first, second = (json.loads(line) for line in result.stdout.splitlines())
    assert set(first) == {"id", "image"} and set(second) == {"id", "text"}
    assert abs(sum(v * v for v in first["image"]) - 1) < 1e-3
    assert len(first["image"]) == len(second["text"]) == 8


def test_resume_from_the_command_line(world: Path, tmp_path: Path):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_config(world, epochs=1)))
    assert invoke("train", config, "--out", tmp_path / "r").exit_code == 0
    again = invoke("train", config, "--out", tmp_path / "r")
    assert again.exit_code == 1 and "--resume" in again.output
    resumed = invoke("train", config, "--out", tmp_path / "r", "--resume")
    assert resumed.exit_code == 0, resumed.output


def test_demo_table_names_the_best_single_modality(capsys: pytest.CaptureFixture[str]):
    def tasks(accuracy: float, mse: float) -> dict:
        return {"tasks": {"c": {"accuracy": accuracy}, "r": {"mse": mse}}}

    metrics = {
        **tasks(0.9, 0.1),
        "baselines": {"audio": tasks(0.5, 0.2), "image": tasks(0.7, 0.4)},
        "train_seconds": 1.0,
        "splits": {"train": 10},
        "compute": {"device": "cpu", "processes": 1, "threads": 1, "workers": 0},
    }
    print_metrics(metrics)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[-2:] == ["best", "single"]
    assert lines[1].startswith("c/accuracy") and lines[1].split()[-1] == "image"
    assert lines[2].startswith("r/mse") and lines[2].split()[-1] == "audio"  # lower is better
