"""Validating manifests, refusing bad rows, and leaving them out with --skip-bad."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from omnifuse.cli import cli
from omnifuse.config import parse_config
from omnifuse.data.dataset import BadRowsError
from omnifuse.data.validate import validate_manifest
from omnifuse.train.run import prepare
from tests.conftest import tiny_config, world_copy


@pytest.fixture
def broken(world: Path, tmp_path: Path) -> tuple[Path, list[dict]]:
    """A copy of the tiny world as JSON lines with five bad rows, absolute file paths (inside
    its folder)."""
    folder, rows = world_copy(world, tmp_path)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    rows[3]["image"] = str(folder / "gone.png")
    rows[10]["image"] = str(folder / "broken.png")
    rows[20]["temperature"] = "warm"
    rows[30]["scene_class"] = 99
    audio = next(r["audio"] for r in rows[40:] if r["audio"])
    whole = Path(audio).read_bytes()
    (folder / "cut.wav").write_bytes(whole[: len(whole) - 5000])
    rows[40]["audio"] = str(folder / "cut.wav")
    path = folder / "broken.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, rows


def pinned(manifest: Path, **train) -> dict:
    """The tiny config with the scene classes given, so that an unseen label is an error
    (otherwise the class list is fitted from whatever the training split holds)."""
    data = tiny_config(manifest, **train)
    data["model"]["tasks"]["scene"]["classes"] = [str(i) for i in range(12)]
    return data


def test_validate_lists_every_bad_row(broken: tuple[Path, list[dict]], world: Path):
    path, rows = broken
    config = parse_config(pinned(world))
    bad = validate_manifest(path, config).bad
    assert [b.index for b in bad] == [3, 10, 20, 30, 40]
    problems = [b.problem for b in bad]
    assert problems[0].startswith("column 'image': file not found:")
    assert problems[1].startswith("column 'image': cannot read image")
    assert problems[2] == "column 'temperature': not a number: 'warm'"
    assert problems[3].startswith("column 'scene_class': label 99 is not one of the 12 classes")
    assert "cut.wav is truncated" in problems[4]
    assert str(bad[0]).startswith(f"broken.jsonl row 4 (id {rows[3]['id']}), column 'image'")


def test_validate_without_a_config_opens_every_file(broken: tuple[Path, list[dict]]):
    path, _ = broken
    bad = validate_manifest(path).bad
    assert [b.index for b in bad] == [3, 10, 40]  # values and labels need a config


def test_validate_command(broken: tuple[Path, list[dict]], world: Path, tmp_path: Path):
    path, _ = broken
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(pinned(world)))
    runner = CliRunner()
    result = runner.invoke(cli, ["data", "validate", str(path), "--config", str(config)])
    assert result.exit_code == 1
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 6 and lines[-1].endswith("5 of 160 rows are bad")
    as_json = runner.invoke(cli, ["data", "validate", str(path), "--json"])
    assert as_json.exit_code == 1
    assert [b["row"] for b in json.loads(as_json.stdout)["bad"]] == [4, 11, 41]
    good = runner.invoke(cli, ["data", "validate", str(world)])
    assert good.exit_code == 0 and "no bad rows" in good.stdout


def test_training_refuses_bad_rows_or_skips_them(broken: tuple[Path, list[dict]], tmp_path: Path):
    path, _ = broken
    data = pinned(path, epochs=1)
    with pytest.raises(BadRowsError) as error:
        prepare(parse_config(data), progress=False)
    assert "(and 4 more bad rows)" in str(error.value)
    assert len(error.value.rows) == 5

    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(data))
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["train", str(config), "--out", str(out), "--skip-bad"])
    assert result.exit_code == 0, result.output
    skipped = [json.loads(line) for line in (out / "skipped_rows.jsonl").read_text().splitlines()]
    assert [s["row"] for s in skipped] == [4, 11, 21, 31, 41]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["skipped_rows"] == 5 and metrics["samples"] == 155
    assert {task: sum(note["unlabelled"].values()) for task, note in metrics["labels"].items()} == {
        "scene": 0,
        "score": 0,
    }
