"""Shared fixtures: a tiny generated world and tiny configs that read it."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import torch

from omnifuse.data.world import generate_world

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 160-sample world on disk; returns its manifest path."""
    return generate_world(tmp_path_factory.mktemp("world") / "world", n=160, seed=1)


def world_copy(world: Path, tmp_path: Path) -> tuple[Path, list[dict[str, Any]]]:
    """A copy of the tiny world's folder under `tmp_path` and its rows with absolute file
    paths into the copy, for tests that write manifests of their own beside the files (a
    manifest's files must lie in its folder)."""
    folder = tmp_path / "world"
    shutil.copytree(world.parent, folder)
    rows = pq.read_table(world).to_pylist()
    for row in rows:
        for column in ("image", "audio"):
            if row[column]:
                row[column] = str(folder / row[column])
    return folder, rows


def tiny_config(manifest: Path, **train: Any) -> dict[str, Any]:
    """A small config over the world's four modalities with all three task types."""
    return {
        "data": {"manifest": str(manifest)},
        "modalities": {
            "image": {"kind": "image", "size": 32, "encoder": {"type": "image_conv", "width": 8}},
            "text": {
                "kind": "text",
                "column": "caption",
                "max_length": 64,
                "encoder": {"type": "text_transformer", "depth": 1},
            },
            "audio": {"kind": "audio", "n_mels": 16, "n_fft": 256, "hop": 256},
            "tabular": {
                "kind": "tabular",
                "numeric": ["temperature", "humidity"],
                "categorical": ["venue", "operator"],
            },
        },
        "model": {
            "dim": 16,
            "fusion": {"type": "perceiver", "latents": 4, "depth": 1},
            "tasks": {
                "scene": {"type": "classification", "target": "scene_class"},
                "score": {"type": "regression", "target": "score"},
                "retrieval": {"type": "alignment", "between": ["image", "text"], "embed_dim": 8},
            },
        },
        "train": {"epochs": 2, "batch_size": 32, "lr": 3e-3, "seed": 0, **train},
    }


@pytest.fixture(scope="session")
def aligned_model(world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small image-text alignment model trained on the tiny world; returns its folder
    (config.json + model.safetensors), for the tests of search and serving."""
    from omnifuse.config import RunConfig
    from omnifuse.train.run import run

    config = {
        "data": {"manifest": str(world)},
        "modalities": {
            "image": {"kind": "image", "size": 32, "encoder": {"type": "image_conv", "width": 8}},
            "text": {
                "kind": "text",
                "column": "caption",
                "max_length": 64,
                "encoder": {"type": "text_transformer", "depth": 1},
            },
        },
        "model": {
            "dim": 16,
            "fusion": {"type": "late"},
            "tasks": {
                "retrieval": {"type": "alignment", "between": ["image", "text"], "embed_dim": 16},
                "scene": {"type": "classification", "target": "scene_class"},
            },
        },
        "train": {"epochs": 3, "batch_size": 32, "lr": 3e-3, "seed": 0, "threads": 1},
    }
    out = tmp_path_factory.mktemp("aligned") / "model"
    run(RunConfig.model_validate(config).check(), out, checkpoints=False, progress=False)
    return out


@pytest.fixture(scope="session")
def image_tokenizer(world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny FSQ image tokenizer (32x32 RGB images, a 8x8 grid of 125 codes) trained for one
    epoch on the tiny world; returns its folder."""
    from omnifuse.config import RunConfig
    from omnifuse.train.run import run

    config = {
        "data": {"manifest": str(world)},
        "modalities": {
            "image": {"kind": "image", "size": 32, "encoder": {"type": "image_conv", "width": 4}}
        },
        "model": {
            "dim": 8,
            "fusion": {"type": "unimodal", "modality": "image"},
            "tasks": {
                "tokenizer": {
                    "type": "image_tokenizer",
                    "modality": "image",
                    "width": 4,
                    "levels": [5, 5, 5],
                },
            },
        },
        "train": {"epochs": 1, "batch_size": 32, "lr": 3e-3, "seed": 0, "threads": 1},
    }
    out = tmp_path_factory.mktemp("tokenizer") / "model"
    run(RunConfig.model_validate(config).check(), out, checkpoints=False, progress=False)
    return out


@pytest.fixture(scope="session")
def image_generator(
    world: Path, image_tokenizer: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A tiny caption-to-image model over `image_tokenizer`, trained for one epoch; returns
    its folder."""
    from omnifuse.config import RunConfig
    from omnifuse.train.run import run

    config = tiny_config(world, epochs=1, threads=1)
    config["modalities"] = {n: config["modalities"][n] for n in ("image", "text")}
    config["model"]["tasks"] = {
        "picture": {
            "type": "image_generation",
            "modality": "image",
            "tokenizer": str(image_tokenizer),
            "depth": 1,
            "steps": 4,
        }
    }
    out = tmp_path_factory.mktemp("generator") / "model"
    run(RunConfig.model_validate(config).check(), out, checkpoints=False, progress=False)
    return out
