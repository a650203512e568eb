"""User data to manifests: an image folder tree, and COCO-style caption annotations.

Both write a manifest (CSV, JSON Lines or Parquet, by the output's suffix) whose file paths
are relative to the manifest's folder, so the manifest and its files move together.

    import_image_folder("photos", "photos.csv")            # photos/<class>/<file>
    import_coco_captions("captions_val2017.json", "val2017", "coco.jsonl")

docs/data.md has a runnable example of every format, with the config that reads it.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from omnifuse.errors import ConfigError, DataError
from omnifuse.manifest import SPLITS

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def write_manifest(rows: Sequence[dict[str, Any]], path: Path | str) -> Path:
    """Write `rows` (dicts with the same keys) as CSV, JSON Lines or Parquet by `path`'s
    suffix, atomically (a temporary file renamed into place)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl", ".ndjson", ".parquet"):
        raise ConfigError(
            f"{path}: unknown manifest format '{suffix}' (use .csv, .jsonl or .parquet)"
        )
    if not rows:
        raise DataError(f"{path}: nothing to write (no rows)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    columns = list(rows[0])
    if suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(list(rows)), tmp)
    elif suffix == ".csv":
        with tmp.open("w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
    else:
        with tmp.open("w") as file:
            for row in rows:
                file.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


def _relative(path: Path, start: Path) -> str:
    """`path` relative to `start` (the manifest's folder), with forward slashes. Files a
    manifest names must lie in its folder (`Modality.locate`): one outside it is refused
    here, before a manifest that could not be read is written."""
    relative = Path(os.path.relpath(path.resolve(), start.resolve()))
    if relative.parts and relative.parts[0] == "..":
        raise DataError(
            f"{path}: outside {start}, the folder of the manifest to write; write the manifest "
            "in the data's folder or one above it"
        )
    return relative.as_posix()


# --- image folders --------------------------------------------------------------------------


def import_image_folder(
    root: Path | str, out: Path | str, *, column: str = "image", target: str = "label"
) -> Path:
    """A manifest of every image under `root`, laid out as `root/<class>/<file>` or, with
    splits, `root/<train|val|test>/<class>/<file>`: columns id, [split,] `column` (the path)
    and `target` (the class, the folder's name). Files directly under `root` (or a split
    folder) and non-image files are skipped; images deeper inside a class folder belong to it.

    >>> import_image_folder("pets", "pets/manifest.csv")  # doctest: +SKIP
    """
    root, out = Path(root), Path(out)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    split_folders = [p for p in folders if p.name in SPLITS]
    if split_folders and len(split_folders) != len(folders):
        others = ", ".join(p.name for p in folders if p.name not in SPLITS)
        raise DataError(
            f"{root}: mixes split folders ({', '.join(p.name for p in split_folders)}) with "
            f"others ({others}); use root/<class>/ or root/<split>/<class>/"
        )
    parts: list[tuple[str | None, Path]] = (
        [(p.name, p) for p in split_folders] if split_folders else [(None, root)]
    )
    rows: list[dict[str, Any]] = []
    for split, base in parts:
        for class_dir in sorted(p for p in base.iterdir() if p.is_dir()):
            if class_dir.name.startswith("."):
                continue
            for file in sorted(class_dir.rglob("*")):
                if file.suffix.lower() not in IMAGE_SUFFIXES or not file.is_file():
                    continue
                row: dict[str, Any] = {"id": file.relative_to(root).with_suffix("").as_posix()}
                if split is not None:
                    row["split"] = split
                row[column] = _relative(file, out.parent)
                row[target] = class_dir.name
                rows.append(row)
    if not rows:
        raise DataError(
            f"{root}: no images in class folders (expected root/<class>/<file>, files ending "
            f"{', '.join(IMAGE_SUFFIXES)})"
        )
    if split_folders and not any(r["split"] == "train" for r in rows):
        raise DataError(f"{root}: split folders but no images under {root / 'train'}")
    return write_manifest(rows, out)


# --- COCO captions --------------------------------------------------------------------------


def import_coco_captions(
    annotations: Path | str,
    images: Path | str,
    out: Path | str,
    *,
    per: Literal["image", "caption"] = "image",
    split: str | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
) -> Path:
    """A manifest from COCO-style caption annotations (`images`: id and file_name;
    `annotations`: image_id and caption), with image files under `images`.

    `per="image"`: one row per image with its first caption (in file order);
    `per="caption"`: one row per caption. Columns: id, split, image, caption (and
    caption_id, image_id). `split` names every row's split; left unset, each image is
    assigned train, val or test by a hash of its id (`val_fraction`, `test_fraction`), so
    all captions of an image share a split and no image leaks across splits.
    """
    annotations, images, out = Path(annotations), Path(images), Path(out)
    if split is not None and split not in SPLITS:
        raise ConfigError(f"coco: split must be one of {', '.join(SPLITS)}, got '{split}'")
    if per not in ("image", "caption"):
        raise ConfigError(f"coco: per must be 'image' or 'caption', got '{per}'")
    try:
        data = json.loads(annotations.read_text())
    except OSError as error:
        raise DataError(f"{annotations}: cannot read: {error.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{annotations}: not valid JSON: {error}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(f"{annotations}: not COCO captions (no 'images' list)")
    if not isinstance(data.get("annotations"), list):
        raise DataError(f"{annotations}: not COCO captions (no 'annotations' list)")
    files: dict[Any, str] = {}
    for number, image in enumerate(data["images"], start=1):
        if not isinstance(image, dict) or "id" not in image or "file_name" not in image:
            raise DataError(f"{annotations}: images[{number - 1}] lacks 'id' or 'file_name'")
        files[image["id"]] = image["file_name"]
    captions: dict[Any, list[tuple[Any, str]]] = {}
    for number, note in enumerate(data["annotations"]):
        if not isinstance(note, dict) or "image_id" not in note or "caption" not in note:
            raise DataError(f"{annotations}: annotations[{number}] lacks 'image_id' or 'caption'")
        if note["image_id"] not in files:
            raise DataError(
                f"{annotations}: annotations[{number}] names image_id {note['image_id']!r}, "
                "which is not in 'images'"
            )
        captions.setdefault(note["image_id"], []).append(
            (note.get("id", number), " ".join(str(note["caption"]).split()))
        )
    rows = []
    for image_id in files:  # in the order of 'images'; images without captions are skipped
        chosen = captions.get(image_id, [])
        if per == "image":
            chosen = chosen[:1]
        row_split = split or _hash_split(image_id, val_fraction, test_fraction)
        path = _relative(images / files[image_id], out.parent)
        for caption_id, caption in chosen:
            rows.append(
                {
                    "id": str(image_id if per == "image" else caption_id),
                    "split": row_split,
                    "image": path,
                    "caption": caption,
                    "image_id": str(image_id),
                    "caption_id": str(caption_id),
                }
            )
    if not rows:
        raise DataError(f"{annotations}: no captions")
    return write_manifest(rows, out)


def _hash_split(key: Any, val_fraction: float, test_fraction: float) -> str:
    """train, val or test for `key`, stable across runs and machines (a hash, not a draw)."""
    u = int(hashlib.sha1(str(key).encode()).hexdigest()[:8], 16) / 16**8
    if u < val_fraction:
        return "val"
    return "test" if u < val_fraction + test_fraction else "train"
