"""An exact index of the tiny world's images, built once, and brute-force search to check
the index against."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from omnifuse.data.dataset import Readers, load_samples
from omnifuse.manifest import read_manifest
from omnifuse.model import OmnifuseModel
from omnifuse.retrieval import Index, build_index, open_index

COLUMNS = ["scene_class", "venue"]


@pytest.fixture(scope="session")
def model(aligned_model: Path) -> OmnifuseModel:
    return OmnifuseModel.from_pretrained(aligned_model)


@pytest.fixture(scope="session")
def built(aligned_model: Path, world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An exact index of the world's images, storing scene_class and venue (read-only)."""
    out = tmp_path_factory.mktemp("index") / "world"
    build_index(aligned_model, world, "image", out, columns=COLUMNS, progress=False)
    return out


@pytest.fixture
def exact(built: Path) -> Index:
    return open_index(built)


def embeddings(model: OmnifuseModel, world: Path) -> dict[str, dict[str, np.ndarray]]:
    """{modality: {id: normalised embedding}} through omnifuse.inference's embed_rows."""
    from omnifuse.inference import embed_rows

    manifest = read_manifest(world)
    samples, _ = load_samples(manifest, range(len(manifest.rows)), Readers.of(model.config))
    found: dict[str, dict[str, np.ndarray]] = {"image": {}, "text": {}}
    for row in embed_rows(model, samples):
        for modality in found:
            if modality in row:
                found[modality][row["id"]] = np.asarray(row[modality], np.float32)
    return found


def brute_force(
    index: Index, query: np.ndarray, modality: str, vectors: dict[str, np.ndarray], k: int
) -> tuple[list[str], np.ndarray]:
    """Ids and scores of the k best of `vectors` (raw embeddings of the indexed modality)
    for `query` (a raw embedding of `modality`), centred as the index centres, by numpy."""

    def centre(v: np.ndarray, name: str) -> np.ndarray:
        if index.meta["gap_correction"]:
            v = v - np.asarray(index.meta["centroids"][name], np.float32)
        return v / np.linalg.norm(v, axis=-1, keepdims=True)

    ids = list(vectors)
    scores = centre(np.stack([vectors[i] for i in ids]), index.modality) @ centre(query, modality)
    order = np.argsort(-scores, kind="stable")[:k]
    return [ids[i] for i in order], scores[order]
