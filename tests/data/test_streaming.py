"""Streaming: samples read from their files at every use, by worker processes, give exactly
what the in-memory path gives; bad rows are still found before training, and a row that goes
bad during training stops it with its located one-line message."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from omnifuse.config import parse_config
from omnifuse.data.dataset import BadRowsError
from omnifuse.errors import DataError
from omnifuse.train.run import prepare, run, train
from tests.conftest import tiny_config


def config(manifest: Path, **data: object):
    raw = tiny_config(manifest, epochs=2)
    raw["data"] |= data
    return parse_config(raw)


def test_streaming_with_workers_gives_the_in_memory_metrics(world: Path, tmp_path: Path):
    memory = run(config(world), tmp_path / "memory", progress=False, checkpoints=False)
    for workers in (0, 2):
        streamed = run(
            config(world, stream=True, workers=workers),
            tmp_path / f"stream{workers}",
            progress=False,
            checkpoints=False,
        )
        assert streamed["tasks"] == memory["tasks"]
        assert streamed["data"] == memory["data"]  # what loading cut, counted when checking


def test_a_streaming_run_holds_no_sample(world: Path):
    prepared = prepare(config(world, stream=True), progress=False)
    assert all(split.loaded is None for split in prepared.splits.values())
    assert len(prepared.splits["train"]) == len(prepared.rows["train"])
    assert prepared.splits["train"][0].id == str(prepared.rows["train"][0]).zfill(6)


def bad_copy(world: Path, tmp_path: Path, row: int) -> Path:
    """The world's manifest with row `row`'s image pointing at a file that is not there."""
    table = pq.read_table(world).to_pylist()
    table[row]["image"] = "images/absent.png"
    path = world.parent / f"bad-{row}.parquet"
    pq.write_table(pa.Table.from_pylist(table), path)
    return path


def test_bad_rows_are_found_before_streaming(world: Path, tmp_path: Path):
    manifest = bad_copy(world, tmp_path, 3)
    with pytest.raises(BadRowsError, match=r"row 4 \(id 000003\), column 'image': file not found"):
        prepare(config(manifest, stream=True), progress=False)
    prepared = prepare(config(manifest, stream=True), skip_bad=True, progress=False)
    assert [row.index for row in prepared.skipped] == [3]
    assert 3 not in prepared.splits["train"].rows + prepared.splits["val"].rows


def test_a_row_gone_bad_in_a_worker_is_one_located_line(world: Path, tmp_path: Path):
    copy = tmp_path / "copy"
    shutil.copytree(world.parent, copy)
    manifest = copy / world.name
    prepared = prepare(config(manifest, stream=True, workers=1), progress=False)
    table = pq.read_table(manifest).to_pylist()
    gone = next(i for i in prepared.rows["train"] if table[i]["image"])
    (copy / table[gone]["image"]).unlink()  # after the check, before training reads it
    with pytest.raises(DataError) as error:
        train(prepared, progress=False)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"{world.name} row {gone + 1} (id {table[gone]['id']}), ")
    assert "column 'image': file not found" in message
    assert message.endswith("(the row read cleanly before training)")
