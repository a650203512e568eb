"""Extending omnifuse from outside the package: the example plugin (examples/omnifuse-toy, one
file adding a modality kind, an encoder, a fusion and a task) used in-process from a test
module, and installed through its entry point as a user would."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from omnifuse import registry
from omnifuse.config import parse_config
from omnifuse.errors import ConfigError
from omnifuse.model import OmnifuseModel
from omnifuse.registry import REGISTRIES, list_encoders, list_kinds
from omnifuse.train.run import run

PLUGIN = Path(__file__).parents[1] / "examples" / "omnifuse-toy" / "omnifuse_toy.py"


def numbers_manifest(path: Path, n: int = 120) -> Path:
    """Rows of 1-6 numbers in column `reading`, a second short series in `other`, and their
    total over both."""
    rng = random.Random(0)
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["id", "reading", "other", "total", "split"])
        for i in range(n):
            reading = [round(rng.uniform(-1, 1), 2) for _ in range(rng.randint(1, 6))]
            other = [round(rng.uniform(-1, 1), 2) for _ in range(rng.randint(1, 3))]
            split = "train" if i < 90 else ("val" if i < 105 else "test")
            row = [i, " ".join(map(str, reading)), " ".join(map(str, other))]
            writer.writerow([*row, round(sum(reading) + sum(other), 3), split])
    return path


def toy_config(manifest: Path, **model: object) -> dict:
    return {
        "data": {"manifest": str(manifest)},
        "modalities": {
            "reading": {"kind": "numbers", "max_length": 8},
            "other": {"kind": "numbers", "max_length": 4},
        },
        "model": {
            "dim": 16,
            "fusion": {"type": "mean"},
            "tasks": {"total": {"type": "total", "target": "total"}},
            **model,
        },
        "train": {"epochs": 30, "batch_size": 16, "lr": 0.01, "seed": 0},
    }


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The example plugin imported from its file; the registries are restored afterwards."""
    for reg in REGISTRIES:
        for attribute in ("_builders", "_info", "_origin"):
            monkeypatch.setattr(reg, attribute, dict(getattr(reg, attribute)))
    spec = importlib.util.spec_from_file_location("omnifuse_toy", PLUGIN)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "omnifuse_toy", module)
    spec.loader.exec_module(module)
    return module


def test_a_kind_from_a_test_module_registers_and_trains(toy: ModuleType, tmp_path: Path):
    assert "numbers" in list_kinds()
    assert list_encoders("numbers") == ["numbers_embed"]
    manifest = numbers_manifest(tmp_path / "numbers.csv")
    metrics = run(parse_config(toy_config(manifest)), tmp_path / "run", progress=False)
    # predicting the training mean would be off by the totals' spread
    totals = [float(r["total"]) for r in csv.DictReader(manifest.open()) if r["split"] == "test"]
    spread = sum(abs(t - sum(totals) / len(totals)) for t in totals) / len(totals)
    assert metrics["tasks"]["total"]["mae"] < 0.6 * spread
    # the trained model reloads and reads its config's kind with the built-in fusions too
    assert OmnifuseModel.from_pretrained(tmp_path / "run").config.modalities["reading"].kind == (
        "numbers"
    )
    data = toy_config(manifest, fusion={"type": "perceiver", "latents": 4, "depth": 1})
    OmnifuseModel.build(parse_config(data))


def test_a_plugin_kind_checks_its_config_and_encoders(toy: ModuleType, tmp_path: Path):
    data = toy_config(tmp_path / "m.csv")
    data["modalities"]["reading"]["max_length"] = 0
    with pytest.raises(ConfigError, match=r"modalities\.reading\.max_length: Input should be"):
        parse_config(data)
    data = toy_config(tmp_path / "m.csv")
    data["modalities"]["reading"]["encoder"] = {"type": "image_conv"}
    with pytest.raises(ConfigError, match="encoder 'image_conv' reads image, not numbers"):
        parse_config(data)


def installed(tmp_path: Path, entry_points: str) -> dict[str, str]:
    """An environment in which the plugin is installed, as pip leaves a package: its module
    and a dist-info folder naming the entry points."""
    site = tmp_path / "site"
    info = site / "omnifuse_toy-0.1.0.dist-info"
    info.mkdir(parents=True)
    shutil.copy(PLUGIN, site / PLUGIN.name)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: omnifuse-toy\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(f"[omnifuse.plugins]\n{entry_points}\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *sys.path])}


def omnifuse(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "omnifuse", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_an_installed_plugin_is_listed_and_used_from_a_config(tmp_path: Path):
    env = installed(tmp_path, "toy = omnifuse_toy")
    listed = omnifuse("plugins", "--json", env=env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    found = json.loads(listed.stdout)
    assert found["plugins"] == {"toy": "omnifuse_toy (omnifuse-toy 0.1.0)"}
    assert found["registered"]["modality kind"]["numbers"] == "plugin 'toy'"
    assert found["registered"]["encoder"]["numbers_embed"] == "plugin 'toy'"
    assert found["registered"]["fusion"]["mean"] == "plugin 'toy'"
    assert found["registered"]["task"]["total"] == "plugin 'toy'"
    assert found["registered"]["fusion"]["perceiver"] == "omnifuse"
    config = toy_config(numbers_manifest(tmp_path / "numbers.csv"))
    config["train"]["epochs"] = 2
    (tmp_path / "toy.yaml").write_text(yaml.safe_dump(config))
    trained = omnifuse("train", "toy.yaml", "--out", "run", env=env, cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert "mae" in json.loads((tmp_path / "run" / "metrics.json").read_text())["tasks"]["total"]


def test_a_broken_plugin_is_one_line_naming_it(tmp_path: Path):
    env = installed(tmp_path, "broken = omnifuse_no_such_module")
    listed = omnifuse("plugins", env=env, cwd=tmp_path)
    assert listed.returncode == 1
    assert listed.stderr.strip().splitlines() == [
        "Error: plugin 'broken' (omnifuse_no_such_module) failed to load: "
        "ModuleNotFoundError: No module named 'omnifuse_no_such_module'"
    ]


def test_plugins_load_once(monkeypatch: pytest.MonkeyPatch):
    calls = []
    monkeypatch.setattr(registry, "_plugins", None)
    monkeypatch.setattr(
        registry.importlib.metadata, "entry_points", lambda group: calls.append(group) or []
    )
    registry.load_plugins()
    registry.list_fusions()
    assert calls == ["omnifuse.plugins"]
