"""Building and updating indexes: add and remove round trips, interrupted updates, resumed
builds, bad rows, the modality gap."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from omnifuse.data.dataset import BadRowsError
from omnifuse.errors import DataError
from omnifuse.retrieval import (
    IndexConfig,
    Query,
    add_to_index,
    build_index,
    open_index,
    remove_from_index,
    search,
    store,
)
from omnifuse.retrieval import embed as embed_module
from tests.conftest import world_copy
from tests.retrieval.conftest import COLUMNS


def split_world(world: Path, tmp_path: Path) -> tuple[Path, Path]:
    """The world's folder copied, with two manifests in it: the first 120 rows, the rest."""
    folder = tmp_path / "world"
    shutil.copytree(world.parent, folder)
    table = pq.read_table(world)
    first, rest = folder / "first.parquet", folder / "rest.parquet"
    pq.write_table(table.slice(0, 120), first)
    pq.write_table(table.slice(120), rest)
    return first, rest


@pytest.mark.parametrize("kind", ["exact", "ivf", "hnsw"])
def test_add_then_remove_round_trips(aligned_model, world, tmp_path, model, kind):
    first, rest = split_world(world, tmp_path)
    config = IndexConfig(kind=kind, nlist=2)
    out = tmp_path / "ix"
    index = build_index(aligned_model, first, "image", out, columns=COLUMNS, config=config,
                        progress=False)  # fmt: skip
    before = index.size
    added = add_to_index(out, rest, progress=False)
    new_ids = [i for i in pq.read_table(rest).column("id").to_pylist() if i in added.position_of()]
    assert added.size == before + len(new_ids) and added.version == "v000002"
    image = rest.parent / "images" / f"{new_ids[0]}.png"
    assert search(added, model, Query(file=image), k=1)[0].id == new_ids[0]
    removed = remove_from_index(out, new_ids[:3])
    assert removed.size == added.size - 3
    assert not set(new_ids[:3]) & set(removed.position_of())
    hits = search(removed, model, Query(file=image), k=removed.size)
    assert new_ids[0] not in {h.id for h in hits} and len(hits) == removed.size
    with pytest.raises(DataError, match="already in the index"):
        add_to_index(out, rest, progress=False)
    with pytest.raises(DataError, match="no id 'nope'"):
        remove_from_index(out, ["nope"])
    assert open_index(out).size == removed.size  # refused updates changed nothing


def test_an_interrupted_update_leaves_the_old_index(aligned_model, world, tmp_path, monkeypatch):
    first, rest = split_world(world, tmp_path)
    out = tmp_path / "ix"
    build_index(aligned_model, first, "image", out, columns=COLUMNS, progress=False)
    before = open_index(out)

    def crash(path: Path, name: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(store, "swap_pointer", crash)
    with pytest.raises(KeyboardInterrupt):
        remove_from_index(out, [str(before.ids[0])])
    with pytest.raises(KeyboardInterrupt):
        add_to_index(out, rest, progress=False)
    after = open_index(out)
    assert after.version == before.version and after.size == before.size
    assert list(after.ids) == list(before.ids)
    assert np.array_equal(np.asarray(after.vectors), np.asarray(before.vectors))
    monkeypatch.undo()
    assert remove_from_index(out, [str(before.ids[0])]).size == before.size - 1


def test_a_resumed_build_reuses_its_chunks(aligned_model, world, tmp_path, monkeypatch):
    config = IndexConfig(chunk_rows=50)
    calls: list[range] = []
    real = embed_module.embed_range

    def once(*args, **kwargs):
        calls.append(args[3])
        if len(calls) == 2:
            raise KeyboardInterrupt  # interrupted after the first chunk
        return real(*args, **kwargs)

    monkeypatch.setattr(embed_module, "embed_range", once)
    out = tmp_path / "ix"
    with pytest.raises(KeyboardInterrupt):
        build_index(aligned_model, world, "image", out, config=config, progress=False)
    assert len(list((out / ".partial").glob("chunk-*.npz"))) == 1
    index = build_index(aligned_model, world, "image", out, config=config, progress=False)
    assert [r.start for r in calls] == [0, 50, 50, 100, 150]  # the first chunk not again
    fresh = build_index(aligned_model, world, "image", tmp_path / "fresh", config=config,
                        progress=False)  # fmt: skip
    assert list(index.ids) == list(fresh.ids)
    assert np.allclose(np.asarray(index.vectors), np.asarray(fresh.vectors), atol=1e-6)
    assert not (out / ".partial").exists()


def test_bad_rows_are_refused_or_left_out(aligned_model, world, tmp_path):
    folder, rows = world_copy(world, tmp_path)
    rows[3]["image"] = str(folder / "images" / "missing.png")
    manifest = folder / "bad.parquet"
    pq.write_table(pa.Table.from_pylist(rows), manifest)
    with pytest.raises(BadRowsError, match="row 4") as raised:
        build_index(aligned_model, manifest, "image", tmp_path / "ix", progress=False)
    assert "\n" not in str(raised.value) and "--skip-bad" in str(raised.value)
    index = build_index(aligned_model, manifest, "image", tmp_path / "ix", skip_bad=True,
                        progress=False)  # fmt: skip
    assert index.info()["skipped_rows"] == 1 and rows[3]["id"] not in index.position_of()
    listed = (tmp_path / "ix" / index.version / "skipped_rows.jsonl").read_text()
    assert '"row": 4' in listed


def test_gap_correction_does_not_lower_recall(exact):
    info = exact.info()
    gap = info["gap"]["text"]
    assert gap["pairs"] > 100 and gap["centroid_distance"] > 0
    assert 0 <= gap["own_modality_at_10"] <= 1
    if info["gap_correction"]:
        assert gap["recall_at_10_centred"] >= gap["recall_at_10"]
    else:
        assert gap["recall_at_10_centred"] < gap["recall_at_10"]
    assert set(exact.meta["centroids"]) == {"image", "text"}
    assert info["model"]["files_sha256"] and info["kind"] == "exact"


def test_building_over_an_index_is_refused(aligned_model, world, built):
    with pytest.raises(DataError, match="already an index"):
        build_index(aligned_model, world, "image", built, progress=False)
