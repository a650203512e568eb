import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from omnifuse.config import parse_config
from omnifuse.data.dataset import BadRowsError, Readers, fit_config, load_samples
from omnifuse.errors import DataError
from omnifuse.manifest import TableRows, read_manifest, split_rows

ROWS = [
    {"id": "a", "split": "train", "image": "a.png", "caption": "a red circle", "y": "cat"},
    {"id": "b", "split": "train", "image": "b.png", "caption": None, "y": "dog"},
    {"id": "c", "split": "test", "image": "c.png", "caption": "two", "y": "cat"},
]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    for name in "abc":
        Image.new("RGB", (10, 12), (200, 10, 10)).save(tmp_path / f"{name}.png")
    return tmp_path


def write(folder: Path, rows: list[dict], fmt: str) -> Path:
    path = folder / f"manifest.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        header = list(rows[0])
        lines = [",".join(header)] + [",".join(str(r[k] or "") for k in header) for r in rows]
        path.write_text("\n".join(lines) + "\n")
    return path


def config(manifest: Path) -> dict:
    return {
        "data": {"manifest": str(manifest)},
        "modalities": {
            "image": {"kind": "image", "size": 8},
            "text": {"kind": "text", "column": "caption"},
        },
        "model": {"dim": 8, "tasks": {"y": {"type": "classification", "target": "y"}}},
    }


def load(manifest_path: Path) -> list:
    manifest = read_manifest(manifest_path)
    run = parse_config(config(manifest_path))
    splits = split_rows(manifest, column="split", val_fraction=0, test_fraction=0, seed=0)
    fitted = fit_config(run, manifest, splits["train"])
    samples, bad = load_samples(manifest, range(len(manifest.rows)), Readers.of(fitted))
    if bad:
        raise BadRowsError(manifest, bad)
    return samples


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_every_format_loads_the_same_samples(folder: Path, fmt: str):
    samples = load(write(folder, ROWS, fmt))
    assert [s.id for s in samples] == ["a", "b", "c"]
    assert samples[0].inputs["image"].shape == (3, 8, 8)
    assert samples[1].inputs["text"] is None  # empty caption: absent, not dropped
    assert samples[0].inputs["text"].tolist() == [b + 1 for b in b"a red circle"]
    assert [s.targets["y"].item() for s in samples] == [0, 1, 0]


def test_missing_file_names_row_and_column(folder: Path):
    (folder / "b.png").unlink()
    with pytest.raises(DataError) as error:
        load(write(folder, ROWS, "jsonl"))
    assert str(error.value).startswith(
        "manifest.jsonl row 2 (id b), column 'image': file not found: b.png; list them with "
        "`omnifuse data validate manifest.jsonl`, or leave them out with --skip-bad"
    )


def test_unreadable_image_names_row_and_column(folder: Path):
    (folder / "c.png").write_bytes(b"not a png at all")
    with pytest.raises(
        DataError, match=r"^manifest.csv row 3 \(id c\), column 'image': cannot read image c.png"
    ):
        load(write(folder, ROWS, "csv"))


def test_label_outside_the_classes_is_an_error(folder: Path):
    rows = [*ROWS[:2], {**ROWS[2], "y": "bird"}]
    with pytest.raises(
        DataError, match=r"row 3 \(id c\), column 'y': label 'bird' is not one of the 2 classes"
    ):
        load(write(folder, rows, "jsonl"))


def test_bad_manifests(tmp_path: Path):
    with pytest.raises(DataError, match="manifest not found"):
        read_manifest(tmp_path / "none.jsonl")
    (tmp_path / "m.txt").write_text("x")
    with pytest.raises(DataError, match=r"unknown manifest format '\.txt'"):
        read_manifest(tmp_path / "m.txt")
    (tmp_path / "m.jsonl").write_text('{"a": 1}\n{"a": \n')
    with pytest.raises(DataError, match=r"m\.jsonl line 2: not valid JSON"):
        read_manifest(tmp_path / "m.jsonl")


def test_split_column_values_are_checked(folder: Path):
    manifest = read_manifest(write(folder, [{**ROWS[0], "split": "trian"}], "jsonl"))
    with pytest.raises(DataError, match="row 1 \\(id a\\), column 'split': unknown split 'trian'"):
        split_rows(manifest, column="split", val_fraction=0.1, test_fraction=0.1, seed=0)


def test_seeded_split_without_a_split_column(folder: Path):
    rows = [{"id": str(i), "image": "a.png"} for i in range(100)]
    manifest = read_manifest(write(folder, rows, "jsonl"))
    first = split_rows(manifest, column="split", val_fraction=0.1, test_fraction=0.2, seed=3)
    assert first == split_rows(
        manifest, column="split", val_fraction=0.1, test_fraction=0.2, seed=3
    )
    assert [len(first[k]) for k in ("train", "val", "test")] == [70, 10, 20]
    assert sorted(first["train"] + first["val"] + first["test"]) == list(range(100))


def test_values_given_in_the_config_are_not_refitted(folder: Path):
    path = write(folder, ROWS, "jsonl")
    data = config(path)
    data["model"]["tasks"]["y"]["classes"] = ["dog", "cat", "bird"]
    data["modalities"]["image"]["mean"] = [0.1, 0.2, 0.3]
    manifest = read_manifest(path)
    fitted = fit_config(parse_config(data), manifest, [0, 1])
    assert fitted.model.tasks["y"].options["classes"] == ["dog", "cat", "bird"]
    assert fitted.modalities["image"].mean == [0.1, 0.2, 0.3]
    assert fitted.modalities["image"].std is not None  # unset: fitted


def test_parquet_rows_are_read_from_the_table_as_asked(tmp_path: Path):
    rows = [
        {"id": "a", "value": 1.5, "series": [1.0, None], "label": None},
        {"id": "b", "value": None, "series": None, "label": "x"},
        {"id": "c", "value": 3.0, "series": [2.0], "label": "y"},
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "m.parquet")
    manifest = read_manifest(tmp_path / "m.parquet")
    assert isinstance(manifest.rows, TableRows)
    assert list(manifest.rows) == rows
    assert [manifest.rows[i] for i in range(3)] == rows
    assert manifest.rows[-1] == rows[-1] and manifest.rows[1:] == rows[1:]
    with pytest.raises(IndexError):
        manifest.rows[3]
    assert manifest.where(1) == "m.parquet row 2 (id b)"
