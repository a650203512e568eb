"""What a build gathers from its chunks (positions, centroids, a sample of pairs) and the
rows' table of ids, files and stored columns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from omnifuse.errors import DataError
from omnifuse.manifest import Manifest, TableRows
from omnifuse.modalities.base import Modality
from omnifuse.retrieval.config import IndexConfig
from omnifuse.retrieval.embed import Chunks


@dataclass
class Collected:
    """The indexed rows' manifest positions, each aligned modality's centroid over the
    collection, and a seeded sample of pairs (indexed modality, other modality) with the
    index position of each pair's indexed row."""

    positions: np.ndarray
    centroids: dict[str, np.ndarray]
    pairs_indexed: dict[str, np.ndarray] = field(default_factory=dict)
    pairs_other: dict[str, np.ndarray] = field(default_factory=dict)
    pairs_position: dict[str, np.ndarray] = field(default_factory=dict)
    missing: int = 0


def collect(
    chunks: Chunks, modality: str, between: Sequence[str], config: IndexConfig
) -> Collected:
    """One pass over the chunks; memory holds the positions and `gap_pairs` pairs per
    other modality (those with the lowest seeded random keys), not the vectors."""
    rng = np.random.default_rng(config.seed)
    sums = {m: np.zeros(0, np.float64) for m in between}
    counts = dict.fromkeys(between, 0)
    positions, missing, written = [], 0, 0
    others = [m for m in between if m != modality]
    kept: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
    for chunk in chunks:
        have = chunk.present[modality]
        for m in between:
            present = chunk.vectors[m][chunk.present[m]].astype(np.float64)
            sums[m] = sums[m] + present.sum(0) if len(sums[m]) else present.sum(0)
            counts[m] += len(present)
        index_position = written + np.cumsum(have) - 1  # position of each row's vector
        for m in others:
            both = have & chunk.present[m]
            keys = rng.random(int(both.sum()))
            new = (keys, chunk.vectors[modality][both], chunk.vectors[m][both],
                   index_position[both])  # fmt: skip
            old = kept.get(m)
            merged = (
                new if old is None else tuple(np.concatenate(p) for p in zip(old, new, strict=True))
            )
            order = np.argsort(merged[0], kind="stable")[: config.gap_pairs]
            kept[m] = tuple(p[order] for p in merged)  # type: ignore[assignment]
        positions.append(chunk.rows[have])
        missing += int((~have).sum())
        written += int(have.sum())
    found = Collected(
        positions=np.concatenate(positions) if positions else np.zeros(0, np.int64),
        centroids={m: (sums[m] / counts[m]).astype(np.float32) for m in between if counts[m]},
        missing=missing,
    )
    for m, (_, indexed, other, where) in kept.items():
        if m in found.centroids and len(indexed):
            found.pairs_indexed[m], found.pairs_other[m] = indexed, other
            found.pairs_position[m] = where
    return found


def metadata(
    manifest: Manifest, positions: np.ndarray, columns: Sequence[str], modality: Modality
) -> pa.Table:
    """id, file (the indexed modality's cell relative to the manifest folder, for a file
    cell; else null) and `columns` of the manifest rows at `positions`; ids must be unique."""
    if isinstance(manifest.rows, TableRows):
        table = manifest.rows.table.take(pa.array(positions))
        cells = {
            c: table.column(c) for c in {*columns, modality.column, "id"} & set(table.column_names)
        }
    else:
        picked = [manifest.rows[int(i)] for i in positions]
        names = {*columns, modality.column, "id"}
        cells = {c: _column([row.get(c) for row in picked]) for c in names}
    ids = (
        pc.cast(cells["id"], pa.string())
        if "id" in cells
        else pa.array([str(i) for i in positions])
    )
    unique_ids(manifest, ids, positions)
    files = [relative(v, manifest.root, modality) for v in cells[modality.column].to_pylist()]
    arrays = {"id": ids, "file": pa.array(files, pa.string())}
    return pa.table(arrays | {c: cells[c] for c in columns if c not in arrays})


def _column(values: list[Any]) -> pa.Array:
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed types: keep them as text
        return pa.array([None if v is None else str(v) for v in values], pa.string())


def unique_ids(manifest: Manifest, ids: pa.Array | pa.ChunkedArray, positions: np.ndarray) -> None:
    values = np.asarray(ids.to_pylist(), dtype=object)
    if len(values) == 0:
        return
    _, first, counts = np.unique(values.astype(str), return_index=True, return_counts=True)
    if (counts > 1).any():
        twice = int(first[np.argmax(counts > 1)])
        again = [int(p) for p, v in zip(positions, values, strict=True) if v == values[twice]]
        raise DataError(
            f"{manifest.path.name}: id {values[twice]} appears in rows {again[0] + 1} and "
            f"{again[1] + 1}; ids must be unique to index"
        )
    if any(v is None for v in values):
        at = int(positions[[v is None for v in values].index(True)])
        raise DataError(f"{manifest.path.name} row {at + 1}: no id; every row needs one")


def relative(value: Any, root: Path, modality: Modality) -> str | None:
    """A file cell as a path relative to `root`, or None for a value that is not a file."""
    if not isinstance(value, str) or Path(value).suffix.lower() not in modality.suffixes:
        return None
    path = Path(value)
    if not path.is_absolute():
        return path.as_posix()
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return None
