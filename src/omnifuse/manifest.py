"""Manifests: one row per sample, columns naming a file or a value per modality and target.

CSV, JSON Lines and Parquet are read into a list of dicts. Relative file paths are resolved
against the manifest's folder. Row numbers in messages count data rows from 1; line numbers,
lines of the file.

Reading is strict, so that nothing is misread: text is UTF-8 (a byte-order mark is dropped),
a column name appears once (in a CSV header, a JSON object, a Parquet schema), and a CSV row
has as many fields as the header. A row that fails only the last check is kept, with its
problem in `Manifest.problems`: loading reports it as a bad row (with its line), which
`--skip-bad` leaves out and `omnifuse data validate` lists.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, overload

import pyarrow as pa
import pyarrow.parquet as pq

from omnifuse.errors import DataError

SPLITS = ("train", "val", "test")
T = TypeVar("T")
# The csv module refuses a field over 128 KiB, and with it the whole file; a big cell is for
# the modality that reads it to accept or refuse, with its row and column.
CSV_FIELD_LIMIT = 2**31 - 1


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
    # every column, in order: a CSV header, a Parquet schema, the keys of all JSON Lines rows
    columns: list[str] = field(default_factory=list)
    problems: dict[int, str] = field(default_factory=dict)  # row index -> why it is unusable

    def __post_init__(self) -> None:
        if not self.columns:
            rows = self.rows
            keys = rows.names if isinstance(rows, TableRows) else (k for row in rows for k in row)
            self.columns = list(dict.fromkeys(keys))

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
    """The rows of a CSV, JSON Lines or Parquet manifest; a file that cannot be read whole
    (not UTF-8, a column named twice, a line that is not JSON) is a DataError naming where."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: manifest not found")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            manifest = Manifest(path, TableRows(_read_parquet(path)))
        elif suffix in (".jsonl", ".ndjson"):
            manifest = Manifest(path, _read_jsonl(path))
        elif suffix == ".csv":
            manifest = _read_csv(path)
        else:
            raise DataError(
                f"{path}: unknown manifest format '{suffix}' (use .csv, .jsonl or .parquet)"
            )
    except (pa.ArrowException, OSError) as error:
        raise DataError(f"{path}: cannot read the manifest: {str(error).splitlines()[0]}") from None
    except UnicodeDecodeError:
        raise DataError(
            f"{path.name}{_undecodable(path)}: not UTF-8 text; save it as UTF-8"
        ) from None
    if not manifest.rows:
        raise DataError(f"{path}: the manifest has no rows")
    return manifest


def _read_csv(path: Path) -> Manifest:
    """Every row a dict of the header's columns (empty cells None). A row with more or fewer
    fields than the header is kept, cut or padded with None, and its problem recorded."""
    csv.field_size_limit(CSV_FIELD_LIMIT)
    rows: list[dict[str, Any]] = []
    problems: dict[int, str] = {}
    with path.open(encoding="utf-8-sig", newline="") as file:
        reader = csv.reader(file)
        line = 1  # where the record being read starts
        try:
            header = next((fields for fields in reader if fields), [])
            if (name := _repeated(header)) is not None:
                raise DataError(f"{path.name}: column {name!r} appears twice in the header")
            line = reader.line_num + 1
            for fields in reader:
                if fields:  # a blank line is no row
                    if len(fields) != len(header):
                        problems[len(rows)] = (
                            f"line {line}: {len(fields)} fields, but the header has "
                            f"{len(header)} columns"
                        )
                        fields = fields[: len(header)] + [""] * (len(header) - len(fields))
                    cells = zip(header, fields, strict=True)
                    rows.append({name: cell if cell != "" else None for name, cell in cells})
                line = reader.line_num + 1
        except csv.Error as error:
            raise DataError(f"{path.name} line {line}: not valid CSV: {error}") from None
    return Manifest(path, rows, header, problems)


def _repeated(names: Iterable[str]) -> str | None:
    """The first name that appears a second time, or None."""
    seen: set[str] = set()
    for name in names:
        if name in seen:
            return name
        seen.add(name)
    return None


def _undecodable(path: Path) -> str:
    """' line N (byte B)': where the first bytes that are not UTF-8 stand ('' if none)."""
    offset = 0
    with path.open("rb") as file:
        for number, line in enumerate(file, start=1):  # '\n' is never inside a UTF-8 character
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as error:
                return f" line {number} (byte {offset + error.start})"
            offset += len(line)
    return ""


def _read_parquet(path: Path) -> pa.Table:
    """The whole table, decoded a batch at a time into memory from the C allocator, which
    gives back what decoding used: 300,000 rows of 22 MB raised the peak by 52 MiB this way,
    by 91 MiB through `pq.read_table` and Arrow's default pool (docs/benchmarks.md)."""
    default = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        file = pq.ParquetFile(path)
        if (name := _repeated(file.schema_arrow.names)) is not None:
            raise DataError(f"{path.name}: column {name!r} appears twice in the schema")
        return pa.Table.from_batches(
            file.iter_batches(batch_size=16384, use_threads=False), schema=file.schema_arrow
        )
    finally:
        pa.set_memory_pool(default)


class _RepeatedKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refused when a key appears twice (json would keep only the last)."""
    value = dict(pairs)
    if len(value) < len(pairs):
        raise _RepeatedKey(str(_repeated(key for key, _ in pairs)))
    return value


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """One JSON object a line; a line is held only while it is parsed."""
    rows = []
    with path.open(encoding="utf-8-sig") as file:
        for number, line in enumerate(file, start=1):
            if not line or line.isspace():
                continue
            try:
                row = json.loads(line, object_pairs_hook=_object)
            except _RepeatedKey as error:
                where = f"{path.name} line {number}"
                raise DataError(f"{where}: key {error.key!r} appears twice in an object") from None
            except json.JSONDecodeError as error:
                raise DataError(f"{path.name} line {number}: not valid JSON: {error.msg}") from None
            if not isinstance(row, dict):
                raise DataError(f"{path.name} line {number}: expected a JSON object")
            rows.append(row)
    return rows


def split_rows(
    manifest: Manifest, *, column: str, val_fraction: float, test_fraction: float, seed: int
) -> dict[str, list[int]]:
    """Row indices per split: from `column` when the manifest has it, else a seeded shuffle.
    A row the manifest could not read whole (`Manifest.problems`) whose split is not one
    counts as training: loading reports it there, and --skip-bad leaves it out."""
    splits: dict[str, list[int]] = {name: [] for name in SPLITS}
    if column in manifest.columns:
        for index, row in enumerate(manifest.rows):
            value = row.get(column)
            if value not in SPLITS and index in manifest.problems:
                value = "train"
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
