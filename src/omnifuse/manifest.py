"""Manifests: one row per sample, columns naming a file or a value per modality and target.

CSV, JSON Lines and Parquet are read into a list of dicts. Relative file paths are resolved
against the manifest's folder. Row numbers in messages count data rows from 1.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, overload

import pyarrow as pa
import pyarrow.parquet as pq

from omnifuse.errors import DataError

SPLITS = ("train", "val", "test")
T = TypeVar("T")


class TableRows(Sequence[dict[str, Any]]):
    """The rows of an Arrow table, each made a dict when it is asked for: a Parquet manifest
    of a million rows is held as its columns (a few bytes a cell), not as a million dicts."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table
        self.names = table.column_names
        self.columns = [table.column(name) for name in self.names]

    def __len__(self) -> int:
        return self.table.num_rows

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...

    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...

    def __getitem__(self, index: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        cells = zip(self.names, self.columns, strict=True)
        return {name: column[index].as_py() for name, column in cells}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for batch in self.table.to_batches(max_chunksize=4096):  # a few dicts at a time
            yield from batch.to_pylist()


@dataclass
class Manifest:
    path: Path
    rows: Sequence[dict[str, Any]]  # a list, or a Parquet file's TableRows

    @property
    def root(self) -> Path:
        return self.path.parent

    def where(self, index: int) -> str:
        """'manifest.jsonl row 3 (id 000002)': where a row stands, for messages."""
        row_id = self.rows[index].get("id")
        return f"{self.path.name} row {index + 1}" + (
            f" (id {row_id})" if row_id is not None else ""
        )

    def readable(self, indices: Sequence[int], read: Callable[[dict[str, Any]], T]) -> list[T]:
        """`read(row)` for each of the rows that it can read. Statistics are fitted on these;
        the rows it cannot read are reported, or refused, when samples are loaded."""
        values = []
        for index in indices:
            try:
                values.append(read(self.rows[index]))
            except DataError:
                continue
        return values


def read_manifest(path: str | Path) -> Manifest:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: manifest not found")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            rows: Sequence[dict[str, Any]] = TableRows(_read_parquet(path))
        elif suffix in (".jsonl", ".ndjson"):
            rows = _read_jsonl(path)
        elif suffix == ".csv":
            with path.open(newline="") as file:
                rows = [
                    {k: (v if v != "" else None) for k, v in r.items()}
                    for r in csv.DictReader(file)
                ]
        else:
            raise DataError(
                f"{path}: unknown manifest format '{suffix}' (use .csv, .jsonl or .parquet)"
            )
    except (pa.ArrowException, OSError) as error:
        raise DataError(f"{path}: cannot read the manifest: {str(error).splitlines()[0]}") from None
    except csv.Error as error:
        raise DataError(f"{path}: not valid CSV: {error}") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text") from None
    if not rows:
        raise DataError(f"{path}: the manifest has no rows")
    return Manifest(path, rows)


def _read_parquet(path: Path) -> pa.Table:
    """The whole table, decoded a batch at a time into memory from the C allocator, which
    gives back what decoding used: 300,000 rows of 22 MB raised the peak by 52 MiB this way,
    by 91 MiB through `pq.read_table` and Arrow's default pool (docs/benchmarks.md)."""
    default = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        file = pq.ParquetFile(path)
        return pa.Table.from_batches(
            file.iter_batches(batch_size=16384, use_threads=False), schema=file.schema_arrow
        )
    finally:
        pa.set_memory_pool(default)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    with path.open() as file:
        for number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"{path.name} line {number}: not valid JSON: {error.msg}") from None
            if not isinstance(row, dict):
                raise DataError(f"{path.name} line {number}: expected a JSON object")
            rows.append(row)
    return rows


def split_rows(
    manifest: Manifest, *, column: str, val_fraction: float, test_fraction: float, seed: int
) -> dict[str, list[int]]:
    """Row indices per split: from `column` when the manifest has it, else a seeded shuffle."""
    splits: dict[str, list[int]] = {name: [] for name in SPLITS}
    if column in manifest.rows[0]:
        for index, row in enumerate(manifest.rows):
            value = row.get(column)
            if value not in SPLITS:
                raise DataError(
                    f"{manifest.where(index)}, column '{column}': unknown split {value!r} "
                    f"(expected one of {', '.join(SPLITS)})"
                )
            splits[value].append(index)
    else:
        order = list(range(len(manifest.rows)))
        random.Random(seed).shuffle(order)
        n_val = round(len(order) * val_fraction)
        n_test = round(len(order) * test_fraction)
        splits = {
            "val": sorted(order[:n_val]),
            "test": sorted(order[n_val : n_val + n_test]),
            "train": sorted(order[n_val + n_test :]),
        }
    if not splits["train"]:
        raise DataError(f"{manifest.path}: no rows in the training split")
    return splits
