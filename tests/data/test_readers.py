"""Reading data never builds a model: fitting statistics, loading rows and validating a
manifest construct no nn.Module (a pretrained backbone would load just to read files)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from omnifuse.config import parse_config
from omnifuse.data.validate import validate_manifest
from omnifuse.train.run import prepare
from tests.conftest import tiny_config


@pytest.fixture
def no_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: torch.nn.Module, *args: object, **kwargs: object) -> None:
        raise AssertionError(f"{type(self).__name__} built while reading data")

    monkeypatch.setattr(torch.nn.Module, "__init__", refuse)


def test_prepare_and_validate_build_no_module(world: Path, no_modules: None):
    data = tiny_config(world)
    data["model"]["tasks"] |= {
        "caption": {"type": "generation", "target": "caption", "tokenizer": "bpe"},
        "impute": {"type": "reconstruction", "modality": "audio", "teacher_momentum": 0.9},
    }
    config = parse_config(data)
    prepared = prepare(config, progress=False)
    assert prepared.config.model.tasks["caption"].options["merges"]
    batch = prepared.collate(prepared.splits["train"][:4])
    assert set(batch.targets) == {"caption", "scene", "score"}
    bad = validate_manifest(world, config).bad
    assert bad == []


def test_statistics_are_fitted_on_a_bounded_recorded_sample(world: Path):
    data = tiny_config(world)
    data["data"]["fit_rows"] = 10
    prepared = prepare(parse_config(data), progress=False)
    # files read per modality; text and tabular statistics read the manifest cells only
    assert prepared.config.data.fitted_on == {"audio": 10, "image": 10, "tabular": 0, "text": 0}
    everything = prepare(parse_config(tiny_config(world)), progress=False)
    assert everything.config.data.fitted_on is not None
    assert everything.config.data.fitted_on["image"] > 100  # the training rows with an image
    assert prepared.config.modalities["image"].mean != everything.config.modalities["image"].mean
