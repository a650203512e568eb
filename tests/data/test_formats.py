"""User data to manifests: image folder trees and COCO-style captions, from the API and the
command line; each manifest is read back by read_manifest and its files resolve."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from omnifuse.cli import cli
from omnifuse.data.formats import import_coco_captions, import_image_folder, write_manifest
from omnifuse.errors import ConfigError, DataError
from omnifuse.manifest import read_manifest


def image(path: Path, value: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, dtype=np.uint8)).save(path)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_image_folder_without_splits(tmp_path: Path, suffix: str):
    for name in ("cat/a.png", "cat/b.jpg", "dog/c.png", "dog/deeper/d.png"):
        image(tmp_path / "pets" / name)
    (tmp_path / "pets" / "dog" / "notes.txt").write_text("not an image")
    image(tmp_path / "pets" / "loose.png")  # not in a class folder
    out = import_image_folder(tmp_path / "pets", tmp_path / f"manifest{suffix}")
    manifest = read_manifest(out)
    assert [r["label"] for r in manifest.rows] == ["cat", "cat", "dog", "dog"]
    assert [r["id"] for r in manifest.rows][-1] == "dog/deeper/d"
    assert "split" not in manifest.rows[0]
    for row in manifest.rows:
        assert (manifest.root / row["image"]).is_file()
        assert not Path(row["image"]).is_absolute()


def test_image_folder_with_splits(tmp_path: Path):
    for name in ("train/cat/a.png", "train/dog/b.png", "val/cat/c.png", "test/dog/d.png"):
        image(tmp_path / name)
    out = import_image_folder(tmp_path, tmp_path / "manifest.csv")
    rows = read_manifest(out).rows
    assert [(r["split"], r["label"], r["image"]) for r in rows] == [
        ("test", "dog", "test/dog/d.png"),
        ("train", "cat", "train/cat/a.png"),
        ("train", "dog", "train/dog/b.png"),
        ("val", "cat", "val/cat/c.png"),
    ]


def test_image_folder_errors(tmp_path: Path):
    with pytest.raises(DataError, match="no such folder"):
        import_image_folder(tmp_path / "nope", tmp_path / "m.csv")
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match="no images in class folders"):
        import_image_folder(tmp_path / "empty", tmp_path / "m.csv")
    image(tmp_path / "mixed" / "train" / "cat" / "a.png")
    image(tmp_path / "mixed" / "dog" / "b.png")
    with pytest.raises(DataError, match="mixes split folders"):
        import_image_folder(tmp_path / "mixed", tmp_path / "m.csv")
    with pytest.raises(ConfigError, match=r"unknown manifest format '\.txt'"):
        write_manifest([{"a": 1}], tmp_path / "m.txt")


def coco(tmp_path: Path) -> Path:
    for i in (1, 2, 3):
        image(tmp_path / "images" / f"{i:012d}.jpg", 10 * i)
    annotations = {
        "images": [{"id": i, "file_name": f"{i:012d}.jpg"} for i in (1, 2, 3)],
        "annotations": [
            {"id": 10, "image_id": 1, "caption": "A cat on a mat."},
            {"id": 11, "image_id": 2, "caption": "Two dogs\n playing. "},
            {"id": 12, "image_id": 1, "caption": "A sleepy cat."},
            {"id": 13, "image_id": 3, "caption": "A red bus."},
        ],
    }
    path = tmp_path / "captions.json"
    path.write_text(json.dumps(annotations))
    return path


def test_a_manifest_is_not_written_where_its_files_would_be_outside_its_folder(tmp_path: Path):
    image(tmp_path / "pets" / "cat" / "a.png")
    with pytest.raises(
        DataError, match=r"a\.png: outside .*/elsewhere, the folder of the manifest"
    ):
        import_image_folder(tmp_path / "pets", tmp_path / "elsewhere" / "manifest.csv")
    with pytest.raises(DataError, match=r"outside .*/m, the folder of the manifest to write"):
        import_coco_captions(coco(tmp_path), tmp_path / "images", tmp_path / "m" / "c.jsonl")


def test_coco_one_row_per_image(tmp_path: Path):
    out = import_coco_captions(coco(tmp_path), tmp_path / "images", tmp_path / "c.jsonl")
    manifest = read_manifest(out)
    assert [(r["id"], r["caption"]) for r in manifest.rows] == [
        ("1", "A cat on a mat."),
        ("2", "Two dogs playing."),
        ("3", "A red bus."),
    ]
    assert all(r["split"] in ("train", "val", "test") for r in manifest.rows)
    assert all((manifest.root / r["image"]).is_file() for r in manifest.rows)


def test_coco_one_row_per_caption_keeps_an_image_in_one_split(tmp_path: Path):
    out = import_coco_captions(
        coco(tmp_path), tmp_path / "images", tmp_path / "c.parquet", per="caption"
    )
    rows = read_manifest(out).rows
    assert [r["id"] for r in rows] == ["10", "12", "11", "13"]
    assert rows[0]["image"] == rows[1]["image"] and rows[0]["split"] == rows[1]["split"]
    fixed = import_coco_captions(
        coco(tmp_path), tmp_path / "images", tmp_path / "v.csv", per="caption", split="val"
    )
    assert {r["split"] for r in read_manifest(fixed).rows} == {"val"}


def test_coco_errors(tmp_path: Path):
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        import_coco_captions(path, tmp_path, tmp_path / "m.csv")
    path.write_text(json.dumps({"images": []}))
    with pytest.raises(DataError, match="no 'annotations' list"):
        import_coco_captions(path, tmp_path, tmp_path / "m.csv")
    path.write_text(json.dumps({"images": [], "annotations": [{"image_id": 5, "caption": "x"}]}))
    with pytest.raises(DataError, match="image_id 5, which is not in 'images'"):
        import_coco_captions(path, tmp_path, tmp_path / "m.csv")
    with pytest.raises(ConfigError, match="split must be one of"):
        import_coco_captions(path, tmp_path, tmp_path / "m.csv", split="dev")


def test_commands(tmp_path: Path):
    image(tmp_path / "pets" / "cat" / "a.png")
    image(tmp_path / "pets" / "dog" / "b.png")
    runner = CliRunner()
    result = runner.invoke(
        cli, ["data", "folder", str(tmp_path / "pets"), "--out", str(tmp_path / "p.csv")]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["rows"] == 2
    args = [str(coco(tmp_path)), "--images", str(tmp_path / "images")]
    result = runner.invoke(
        cli, ["data", "coco", *args, "--out", str(tmp_path / "c.jsonl"), "--per", "caption"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["rows"] == 4
    result = runner.invoke(cli, ["data", "folder", str(tmp_path / "nope"), "--out", "x.csv"])
    assert result.exit_code == 1 and "no such folder" in result.output
