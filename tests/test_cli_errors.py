"""The command line's error boundary: every command, given a damaged model directory, a damaged
manifest or an --out it cannot write, prints one line that says what and where and exits
with 1; --debug raises instead (for the traceback); an unexpected error is one line too."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner, Result
from safetensors.torch import save_file

from omnifuse.cli import cli
from omnifuse.model import CONFIG_FILE, WEIGHTS_FILE
from tests.conftest import tiny_config


def invoke(*args: object) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


def commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[str]:
    found = []
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found += commands(command, (*prefix, name))
        else:
            found.append(" ".join((*prefix, name)))
    return found


def one_line(result: Result, expected: str) -> None:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and expected in errors[0], result.output
    assert result.output.strip().splitlines()[-1] == errors[0]


@pytest.fixture(scope="module")
def saved(world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("saved") / "run"
    config = out.parent / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_config(world, epochs=1)))
    assert invoke("train", config, "--out", out).exit_code == 0
    return out


def damage_model(saved: Path, folder: Path, how: str) -> Path:
    """A copy of the saved model with one kind of damage."""
    directory = folder / how.replace(" ", "-")
    shutil.copytree(saved, directory)
    config, weights = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    if how == "cut config":
        config.write_bytes(config.read_bytes()[: config.stat().st_size // 2])
    elif how == "config not utf-8":
        config.write_bytes(b"\xff\xfe" + config.read_bytes())
    elif how == "newer config":
        config.write_text(json.dumps(json.loads(config.read_text()) | {"version": 9}))
    elif how == "cut weights":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif how == "garbage weights":
        weights.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    elif how == "wrong shapes":
        from safetensors.torch import load_file

        tensors = load_file(str(weights))
        name = next(k for k, v in tensors.items() if v.ndim == 2)
        tensors[name] = tensors[name][:, :1].contiguous()
        save_file(tensors, str(weights))
    elif how == "no weights":
        weights.unlink()
    return directory


MODEL_DAMAGE = {
    "cut config": "config.json: not valid JSON",
    "config not utf-8": "config.json: not UTF-8 text",
    "newer config": "config.json: config version 9; this omnifuse reads version 1",
    "cut weights": "model.safetensors: not a readable safetensors file",
    "garbage weights": "model.safetensors: not a readable safetensors file",
    "wrong shapes": "model.safetensors: weight ",
    "no weights": "no model.safetensors; not a saved omnifuse model",
}


@pytest.mark.parametrize("how", sorted(MODEL_DAMAGE))
@pytest.mark.parametrize(
    "command", ["eval", "predict", "embed", "generate", "index build", "serve", "analyze"]
)
def test_a_damaged_model_directory_is_one_line(
    saved: Path, world: Path, tmp_path: Path, command: str, how: str
):
    directory = damage_model(saved, tmp_path, how)
    args = {
        "eval": [directory],
        "generate": [directory, "--out", tmp_path / "g"],
        "analyze": ["--model", directory, "--out", tmp_path / "a"],
        "index build": [directory, "--data", world, "--modality", "image", "--out", tmp_path / "i"],
        "serve": [directory, "--index", tmp_path / "i", "--port", "0"],
    }.get(command, [directory, world])
    one_line(invoke(*command.split(), *args), MODEL_DAMAGE[how])
    debug = invoke("--debug", *command.split(), *args)
    assert debug.exit_code == 1 and debug.exception is not None


def damaged_manifests(folder: Path) -> dict[str, tuple[Path, str]]:
    """Manifests that cannot be read at all, with the start of their error."""
    binary = folder / "binary.csv"
    binary.write_bytes(bytes(range(256)) * 4)
    latin = folder / "latin.csv"
    latin.write_bytes("id,caption\n1,caf\xe9\n".encode("latin-1"))
    parquet = folder / "broken.parquet"
    parquet.write_bytes(b"PAR1 this is not parquet")
    jsonl = folder / "broken.jsonl"
    jsonl.write_text('{"id": "1"}\n{"id": \n')
    return {
        "binary": (binary, "binary.csv"),
        "not utf-8": (latin, "latin.csv"),
        "parquet": (parquet, "broken.parquet: cannot read the manifest"),
        "jsonl": (jsonl, "broken.jsonl line 2: not valid JSON"),
        "missing": (folder / "nowhere.csv", "nowhere.csv: manifest not found"),
    }


def manifest_commands(
    saved: Path, manifest: Path, folder: Path
) -> dict[str, Callable[[], list[object]]]:
    """Each command that reads a manifest, as the arguments that make it read `manifest`."""
    config = folder / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_config(manifest, epochs=1)))
    return {
        "train": lambda: ["train", config, "--out", folder / "run"],
        "analyze": lambda: ["analyze", config, "--out", folder / "a"],
        "tune": lambda: ["tune", config, "--trials", "1", "--out", folder / "t"],
        "eval": lambda: ["eval", saved, "--data", manifest],
        "predict": lambda: ["predict", saved, manifest],
        "embed": lambda: ["embed", saved, manifest],
        "data shard": lambda: [
            "data",
            "shard",
            manifest,
            "--config",
            config,
            "--out",
            folder / "s",
        ],
        "data validate": lambda: ["data", "validate", manifest, "--config", config],
        "index build": lambda: [
            "index",
            "build",
            saved,
            "--data",
            manifest,
            "--modality",
            "image",
            "--out",
            folder / "i",
        ],
    }


@pytest.mark.parametrize("case", ["binary", "not utf-8", "parquet", "jsonl", "missing"])
def test_a_damaged_manifest_is_one_line_for_every_command_that_reads_one(
    saved: Path, tmp_path: Path, case: str
):
    manifest, expected = damaged_manifests(tmp_path)[case]
    for name, args in manifest_commands(saved, manifest, tmp_path).items():
        result = invoke(*args())
        assert result.exit_code == 1, (name, result.output)
        one_line(result, expected)


def test_an_out_that_cannot_be_written_is_refused_before_any_work(
    saved: Path, world: Path, tmp_path: Path
):
    a_file = tmp_path / "taken"
    a_file.write_text("mine\n")
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_config(world)))
    folder_outs = {
        "demo": ["demo", "--out", a_file],
        "train": ["train", config, "--out", a_file],
        "bench": ["bench", "--out", a_file],
        "data world": ["data", "world", "--out", a_file],
        "data avmnist": [
            "data",
            "avmnist",
            "--out",
            a_file,
            "--mnist",
            tmp_path,
            "--fsdd",
            tmp_path,
        ],
        "data shard": ["data", "shard", world, "--config", config, "--out", a_file],
        "index build": [
            *["index", "build", saved, "--data", world, "--modality", "image"],
            *["--out", a_file],
        ],
        "generate": ["generate", saved, "--out", a_file],
        "analyze": ["analyze", config, "--out", a_file],
        "tune": ["tune", config, "--trials", "1", "--out", a_file],
    }
    for args in folder_outs.values():
        one_line(invoke(*args), f"--out {a_file}: a file, not a folder")
    file_outs = {
        "data folder": ["data", "folder", tmp_path, "--out", tmp_path],
        "data coco": ["data", "coco", a_file, "--images", tmp_path, "--out", tmp_path],
    }
    for args in file_outs.values():
        one_line(invoke(*args), f"--out {tmp_path}: a folder, not a file")
    assert a_file.read_text() == "mine\n"


INDEX_COMMANDS = {
    "index info": lambda index, saved, world: [index],
    "index add": lambda index, saved, world: [index, "--data", world],
    "index remove": lambda index, saved, world: [index, "--ids", "000001"],
    "search": lambda index, saved, world: [index, "--model", saved, "--text", "a red circle"],
    "serve": lambda index, saved, world: [saved, "--index", index, "--port", "0"],
}


@pytest.mark.parametrize("command", sorted(INDEX_COMMANDS))
def test_a_missing_or_damaged_index_is_one_line(
    saved: Path, world: Path, tmp_path: Path, command: str
):
    not_an_index = tmp_path / "plain"
    not_an_index.mkdir()
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "CURRENT").write_text("v000001\n")  # naming a version that is not there
    cases = {
        tmp_path / "nowhere": "nowhere: no such folder",
        not_an_index: "plain: not an index (no CURRENT file)",
        damaged: "damaged: damaged index (v000001)",
    }
    for index, expected in cases.items():
        args = INDEX_COMMANDS[command](index, saved, world)
        one_line(invoke(*command.split(), *args), expected)
    assert not (tmp_path / "nowhere").exists()  # no command makes the folder it was not given


def test_every_command_is_swept():
    """The sweeps above cover every command that reads a model, a manifest, an index or
    writes --out; a new command must be added to one of them (or here, when it reads none)."""
    reads_nothing = {"plugins"}
    swept = {"eval", "predict", "embed", "train", "data shard", "data validate", "demo", "bench"}
    swept |= {"data world", "data avmnist", "data folder", "data coco", "index build"}
    swept |= {"generate", "analyze", "tune", *INDEX_COMMANDS}
    assert set(commands(cli)) == swept | reads_nothing


def test_an_unexpected_error_is_one_line_naming_where(
    world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import omnifuse.train.run as run_module

    def broken(*args: object, **kwargs: object) -> None:
        {}["nothing"]  # a bug

    monkeypatch.setattr(run_module, "prepare", broken)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_config(world)))
    result = invoke("train", config, "--out", tmp_path / "run")
    one_line(result, "unexpected KeyError at ")
    assert "tests/test_cli_errors.py" not in result.output  # the last omnifuse line, not ours
    assert "omnifuse/train/run.py:" in result.output and "rerun with --debug" in result.output
    assert invoke("--debug", "train", config, "--out", tmp_path / "run").exception is not None


def test_a_process_of_a_distributed_run_failing_is_lines_not_tracebacks(
    world: Path, tmp_path: Path
):
    """Each rank prints its one-line error; the launcher's report of the failure is one more
    line, the last, and the exit code is 1."""
    import os
    import subprocess
    import sys

    import pyarrow.parquet as pq

    rows = pq.read_table(world).to_pylist()
    rows[4]["image"] = "images/nowhere.png"
    manifest = world.parent / "one-missing.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_config(manifest, epochs=1)))
    command = [sys.executable, "-m", "omnifuse", "train", str(config), "--out", str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [*command, "--nproc", "2"], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if "Error: " in line]
    assert len(errors) == 3, done.stderr  # each rank's, then the launcher's
    assert all("one-missing.jsonl row 5" in line for line in errors[:2])
    last = done.stderr.strip().splitlines()[-1]
    assert re.fullmatch(r"Error: training process [01] of 2 failed \(exit code 1\); .*", last)
