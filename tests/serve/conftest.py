"""Fixtures of the serving tests: an image index over a copy of the tiny world (so that tests
may plant symlinks in its folder), built with the session's aligned model."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def collection(world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny world's folder; returns its manifest."""
    folder = tmp_path_factory.mktemp("collection") / "world"
    shutil.copytree(world.parent, folder)
    return folder / world.name


@pytest.fixture(scope="session")
def image_index(
    aligned_model: Path, collection: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """An index of the collection's images with two metadata columns; returns its folder."""
    from omnifuse.retrieval import build_index

    out = tmp_path_factory.mktemp("index") / "images"
    build_index(
        aligned_model,
        collection,
        "image",
        out,
        columns=("caption", "scene_class"),
        progress=False,
    )
    return out
