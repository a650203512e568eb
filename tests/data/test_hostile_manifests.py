"""Damaged and hostile manifests: each one a located error or a listed bad row, none misread."""

from __future__ import annotations

import csv
import io
import json
import tempfile
import tracemalloc
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from omnifuse import manifest as manifest_module
from omnifuse.config import parse_config
from omnifuse.data.dataset import BadRowsError, Readers, read_row
from omnifuse.data.validate import validate_manifest
from omnifuse.errors import DataError
from omnifuse.manifest import read_manifest, split_rows
from omnifuse.train.run import prepare
from tests.conftest import tiny_config, world_copy


def test_a_byte_order_mark_keeps_the_first_column(tmp_path: Path):
    path = tmp_path / "m.csv"
    path.write_bytes(b"\xef\xbb\xbfsplit,id\r\ntest,a\r\ntrain,b\r\n")
    manifest = read_manifest(path)
    assert manifest.columns == ["split", "id"]
    splits = split_rows(manifest, column="split", val_fraction=0.5, test_fraction=0, seed=0)
    assert splits == {"train": [1], "val": [], "test": [0]}  # the column, not a seeded split


def test_a_byte_order_mark_is_dropped_from_json_lines(tmp_path: Path):
    path = tmp_path / "m.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"id": "a"}\n')
    assert read_manifest(path).rows == [{"id": "a"}]


def test_a_column_named_twice_is_refused_in_every_format(tmp_path: Path):
    (tmp_path / "m.csv").write_text("id,x,x\na,1,2\n")
    with pytest.raises(DataError, match=r"^m\.csv: column 'x' appears twice in the header$"):
        read_manifest(tmp_path / "m.csv")
    (tmp_path / "m.jsonl").write_text('{"id": "a", "x": 1}\n{"id": "b", "x": 1, "x": 2}\n')
    with pytest.raises(DataError, match=r"^m\.jsonl line 2: key 'x' appears twice in an object$"):
        read_manifest(tmp_path / "m.jsonl")
    (tmp_path / "n.jsonl").write_text('{"id": "a", "v": {"k": 1, "k": 2}}\n')
    with pytest.raises(DataError, match=r"^n\.jsonl line 1: key 'k' appears twice"):
        read_manifest(tmp_path / "n.jsonl")
    table = pa.Table.from_arrays([pa.array(["a"]), pa.array([1]), pa.array([2])], ["id", "x", "x"])
    pq.write_table(table, tmp_path / "m.parquet")
    with pytest.raises(DataError, match=r"^m\.parquet: column 'x' appears twice in the schema$"):
        read_manifest(tmp_path / "m.parquet")


def test_ragged_rows_are_bad_rows_naming_their_line(tmp_path: Path):
    path = tmp_path / "m.csv"
    # row 2's quoted cell spans two lines, so row 3 starts on line 5
    path.write_text(
        'id,split,y\na,train,1\nb,train,"two\nlines"\nc,test\nd,train,3,4\n\ne,test,5\n'
    )
    manifest = read_manifest(path)
    assert manifest.problems == {
        2: "line 5: 2 fields, but the header has 3 columns",
        3: "line 6: 4 fields, but the header has 3 columns",
    }
    assert manifest.rows[2] == {"id": "c", "split": "test", "y": None}
    assert manifest.rows[3] == {"id": "d", "split": "train", "y": "3"}
    assert manifest.rows[4] == {"id": "e", "split": "test", "y": "5"}  # the blank line is no row
    bad = read_row(manifest, 2, Readers({}, {}))
    assert str(bad) == "m.csv row 3 (id c), line 5: 2 fields, but the header has 3 columns"
    listed = validate_manifest(path).bad
    assert [row.index for row in listed] == [2, 3]


def test_a_ragged_row_whose_split_is_garbled_counts_as_training(tmp_path: Path):
    path = tmp_path / "m.csv"
    path.write_text("id,x,split\na,1,train\nb,test\nc,3,test\n")
    manifest = read_manifest(path)
    splits = split_rows(manifest, column="split", val_fraction=0, test_fraction=0, seed=0)
    assert splits == {"train": [0, 1], "val": [], "test": [2]}  # reported there, not misread


@pytest.fixture
def ragged_world(world: Path, tmp_path: Path) -> Path:
    """The tiny world as CSV (absolute file paths) with row 6 one field short."""
    folder, rows = world_copy(world, tmp_path)
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(rows[0])
    for index, row in enumerate(rows):
        cells = ["" if v is None else v for v in row.values()]
        writer.writerow(cells[:-1] if index == 5 else cells)
    path = folder / "ragged.csv"
    path.write_text(text.getvalue())
    return path


def test_training_refuses_a_ragged_row_or_leaves_it_out(ragged_world: Path):
    config = parse_config(tiny_config(ragged_world, epochs=1))
    with pytest.raises(BadRowsError, match=r"^ragged\.csv row 6 \(id \w+\), line 7: \d+ fields"):
        prepare(config, progress=False)
    prepared = prepare(config, skip_bad=True, progress=False)
    assert [row.index for row in prepared.skipped] == [5]
    assert sum(len(rows) for rows in prepared.rows.values()) == 159


@pytest.mark.parametrize(
    ("name", "content", "line"),
    [
        ("m.csv", b"id,y\na,1\nb,caf\xe9\n", 3),
        ("m.jsonl", b'{"id": "a"}\n{"id": "caf\xe9"}\n', 2),
    ],
)
def test_text_that_is_not_utf8_names_its_line_and_byte(
    tmp_path: Path, name: str, content: bytes, line: int
):
    (tmp_path / name).write_bytes(content)
    byte = content.index(b"\xe9")
    with pytest.raises(DataError, match=rf"^{name} line {line} \(byte {byte}\): not UTF-8 text"):
        read_manifest(tmp_path / name)


def test_a_cell_over_the_csv_module_limit_reaches_its_reader(tmp_path: Path):
    big = "x" * 300_000  # the csv module refuses fields over 128 KiB by default
    (tmp_path / "m.csv").write_text(f'id,text\na,"{big}"\nb,short\n')
    assert read_manifest(tmp_path / "m.csv").rows[0]["text"] == big


def test_a_csv_error_names_its_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(manifest_module, "CSV_FIELD_LIMIT", 10)
    (tmp_path / "m.csv").write_text("id,text\na,short\nb,a much longer cell\n")
    with pytest.raises(DataError, match=r"^m\.csv line 3: not valid CSV: field larger than"):
        read_manifest(tmp_path / "m.csv")


def test_a_huge_json_line_is_held_about_once(tmp_path: Path):
    size = 8_000_000
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"id": "a", "text": "x" * size}) + "\n" + '{"id": "b"}\n')
    tracemalloc.start()
    try:
        manifest = read_manifest(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(manifest.rows[0]["text"]) == size
    assert peak < 3.5 * size  # the line, its parsed value and the reader's buffer; no copies


def test_json_lines_columns_are_the_keys_of_every_row(tmp_path: Path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b", "split": "test"}\n')
    manifest = read_manifest(path)
    assert manifest.columns == ["id", "split"]
    with pytest.raises(DataError, match=r"row 1 \(id a\), column 'split': unknown split None"):
        split_rows(manifest, column="split", val_fraction=0.5, test_fraction=0, seed=0)


# names and cells of any text (no lone surrogates, which UTF-8 cannot write)
text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
names = st.lists(text.filter(lambda n: not n.startswith("\ufeff")), min_size=1, max_size=4)


@st.composite
def tables(draw: st.DrawFn) -> tuple[list[str], list[dict[str, str | None]]]:
    columns = draw(names.filter(lambda n: len(set(n)) == len(n)))
    cell = st.none() | text.filter(bool)  # an empty CSV cell reads as None
    cells = draw(st.lists(st.tuples(*[cell] * len(columns)), min_size=1, max_size=6))
    rows = [dict(zip(columns, row, strict=True)) for row in cells]
    if len(columns) == 1:  # a lone empty cell is a blank CSV line, which is no row
        rows = [r for r in rows if r[columns[0]] is not None] or [{columns[0]: "x"}]
    return columns, rows


@settings(max_examples=60, deadline=None)
@given(tables())
def test_any_table_of_text_reads_back_the_same_from_every_format(
    table: tuple[list[str], list[dict[str, str | None]]],
):
    columns, rows = table
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        with (root / "m.csv").open("w", encoding="utf-8", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(columns)
            writer.writerows([["" if r[c] is None else r[c] for c in columns] for r in rows])
        (root / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        schema = pa.schema([(c, pa.string()) for c in columns])
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), root / "m.parquet")
        for name in ("m.csv", "m.jsonl", "m.parquet"):
            manifest = read_manifest(root / name)
            assert list(manifest.rows) == rows, name
            assert manifest.columns == columns, name
            assert not manifest.problems
