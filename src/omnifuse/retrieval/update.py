"""Updating an index in place: rows added from another manifest, rows removed by id. Each
update writes a whole new version and then swaps the pointer (store.py), so an interrupted
one leaves the old version live and unchanged."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from omnifuse.errors import DataError
from omnifuse.manifest import read_manifest
from omnifuse.model import OmnifuseModel
from omnifuse.registry import closest
from omnifuse.retrieval import structure
from omnifuse.retrieval.build import check_columns, embed_manifest
from omnifuse.retrieval.embed import alignment_for
from omnifuse.retrieval.gap import centred
from omnifuse.retrieval.rows import metadata
from omnifuse.retrieval.store import (
    VECTORS_FILE,
    Index,
    commit_version,
    new_version,
    open_index,
    updating,
    write_version,
)
from omnifuse.retrieval.structure import faiss

ADDING = ".partial-add"
REBUILD_SHARE = 0.25  # an HNSW graph is rebuilt once this share of it is tombstones


def add_to_index(
    index_dir: Path, data: Path, *, skip_bad: bool = False, progress: bool = True
) -> Index:
    """Add the rows of the manifest `data` (its files inside the index's root), embedded
    with the model the index was built with; an id already in the index is refused."""
    index_dir = Path(index_dir)
    open_index(index_dir)  # an index is there (the lock would make the folder)
    with updating(index_dir):
        index = open_index(index_dir)
        model_dir = Path(index.meta["model"]["dir"])
        index.check_model(model_dir)
        model = OmnifuseModel.from_pretrained(model_dir)
        task = alignment_for(model, index.meta["task"], index.modality)
        manifest = read_manifest(data)
        check_columns(manifest, index.columns)
        job = {"model": index.meta["model"]["files_sha256"], "version": index.version}
        chunks, bad = embed_manifest(
            model, task, manifest, index_dir / ADDING, index.config,
            job=job, skip_bad=skip_bad, progress=progress,
        )  # fmt: skip
        positions = [chunk.rows[chunk.present[index.modality]] for chunk in chunks]
        rows = metadata(manifest, np.concatenate(positions), index.columns,
                        model.modalities[index.modality])  # fmt: skip
        rows = rows.set_column(1, "file", pa.array(rebased(manifest.root, index.root, rows)))
        known = index.position_of()
        for new_id in rows.column("id").to_pylist():
            if new_id in known:
                raise DataError(
                    f"{manifest.path.name}: id {new_id} is already in the index {index_dir}; "
                    "remove it first (omnifuse index remove) or give the row another id"
                )
        centroid = index.meta["centroids"][index.modality] if index.meta["gap_correction"] else None
        centre = None if centroid is None else np.asarray(centroid, np.float32)
        added = [
            centred(c.vectors[index.modality][c.present[index.modality]], centre) for c in chunks
        ]
        write_update(index, rows, np.concatenate(added), keep=None, bad=len(bad))
        shutil.rmtree(index_dir / ADDING, ignore_errors=True)
    return open_index(index_dir)


def rebased(manifest_root: Path, index_root: Path, rows: pa.Table) -> list[str | None]:
    """The new rows' files relative to the index root; one outside it is refused."""
    files: list[str | None] = []
    for file in rows.column("file").to_pylist():
        if file is None:
            files.append(None)
            continue
        path = (manifest_root / file).resolve()
        try:
            files.append(path.relative_to(index_root.resolve()).as_posix())
        except ValueError:
            raise DataError(
                f"{file}: outside the index's collection root {index_root}; "
                "added files must lie inside it"
            ) from None
    return files


def remove_from_index(index_dir: Path, ids: Sequence[str]) -> Index:
    """Remove the rows with `ids`; an id not in the index is refused, and nothing changes."""
    index_dir = Path(index_dir)
    open_index(index_dir)  # an index is there (the lock would make the folder)
    with updating(index_dir):
        index = open_index(index_dir)
        known = index.position_of()
        for row_id in ids:
            if str(row_id) not in known:
                raise DataError(
                    f"{index_dir}: no id '{row_id}' in the index{closest(str(row_id), known)}"
                )
        if not ids:
            raise DataError("give one or more ids to remove")
        keep = np.ones(index.size, dtype=bool)
        keep[[known[str(i)] for i in ids]] = False
        write_update(index, None, None, keep=keep, bad=0)
    return open_index(index_dir)


def write_update(
    index: Index,
    rows: pa.Table | None,
    vectors: np.ndarray | None,
    *,
    keep: np.ndarray | None,
    bad: int,
) -> None:
    """A new version: the old rows (those in `keep`) and `rows` with their `vectors`."""
    meta = dict(index.meta)
    name, tmp = new_version(index.path)
    old_rows = index.rows if keep is None else index.rows.filter(pa.array(keep))
    slots = old_rows.column("_slot").to_numpy()
    new_slots = np.zeros(0, np.int64)
    table = old_rows
    if rows is not None and vectors is not None:
        new_slots = np.arange(meta["next_slot"], meta["next_slot"] + len(rows), dtype=np.int64)
        table = pa.concat_tables(
            [old_rows, rows.add_column(0, "_slot", pa.array(new_slots))],
            promote_options="permissive",
        )
        meta["next_slot"] += len(rows)
    size = table.num_rows
    stored = np.lib.format.open_memmap(
        tmp / VECTORS_FILE, mode="w+", dtype=np.float32, shape=(size, index.vectors.shape[1])
    )
    kept = np.arange(index.size) if keep is None else np.flatnonzero(keep)
    for start in range(0, len(kept), structure.BLOCK):
        block = kept[start : start + structure.BLOCK]
        stored[start : start + len(block)] = index.vectors[block]
    if vectors is not None:
        stored[len(kept) :] = vectors
    stored.flush()
    engine = faiss.clone_index(index.faiss)
    tombstones = list(meta.get("tombstones", []))
    removed = index.slots[~keep] if keep is not None else np.zeros(0, np.int64)
    if meta["kind"] == "hnsw":
        tombstones += removed.tolist()
        if len(tombstones) > REBUILD_SHARE * max(1, engine.ntotal):
            engine, _ = structure.make("hnsw", stored.shape[1], size, index.config)
            structure.fill(engine, stored, table.column("_slot").to_numpy())
            tombstones = []
        elif vectors is not None:
            structure.fill(engine, vectors, new_slots)
    else:
        if len(removed):
            engine.remove_ids(faiss.IDSelectorBatch(len(removed), faiss.swig_ptr(removed)))
        if vectors is not None:
            structure.fill(engine, vectors, new_slots)
    meta.update(size=size, tombstones=tombstones, skipped_rows=meta.get("skipped_rows", 0) + bad)
    meta.pop("format", None)
    write_version(tmp, meta, engine, table)
    del stored
    commit_version(index.path, name, tmp)
    del slots
