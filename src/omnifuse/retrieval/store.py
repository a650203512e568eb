"""An index on disk, and the Index that reads it.

    INDEX/CURRENT            the name of the live version folder (replaced atomically)
    INDEX/v000001/index.json what it is: kind, parameters, model fingerprint, gap, recall
    INDEX/v000001/index.faiss  the FAISS index; its int64 ids are the rows' slots
    INDEX/v000001/rows.parquet one row per vector: _slot, id, file, the stored columns
    INDEX/v000001/vectors.npy  the stored (normalised, gap-corrected) vectors, row order

An update writes a whole new version folder, then replaces CURRENT: a reader sees the old
version or the new one, never a mixture, and an interrupted update leaves the old one live.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import weakref
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from omnifuse.errors import ConfigError, DataError, OmnifuseError
from omnifuse.model import CONFIG_FILE, WEIGHTS_FILE, OmnifuseModel, saved_config
from omnifuse.registry import closest
from omnifuse.retrieval.config import IndexConfig

FORMAT = 1
POINTER = "CURRENT"
META_FILE, FAISS_FILE, ROWS_FILE, VECTORS_FILE = (
    "index.json",
    "index.faiss",
    "rows.parquet",
    "vectors.npy",
)
SLOT, ID, FILE = "_slot", "id", "file"
_loaded_fingerprints: weakref.WeakKeyDictionary[OmnifuseModel, str] = weakref.WeakKeyDictionary()


def file_fingerprint(model_dir: Path) -> str:
    """sha256 over the sha256 of the model's model.safetensors and config.json."""
    saved_config(model_dir)  # a missing or damaged model directory is one line naming it
    whole = hashlib.sha256()
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        part = hashlib.sha256()
        with open(Path(model_dir) / name, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                part.update(block)
        whole.update(part.digest())
    return whole.hexdigest()


def loaded_fingerprint(model: OmnifuseModel) -> str:
    """sha256 of a loaded model's weights and config (what it computes), cached per model."""
    if model in _loaded_fingerprints:
        return _loaded_fingerprints[model]
    digest = hashlib.sha256()
    digest.update(json.dumps(model.config.model_dump(mode="json"), sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        value = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)}".encode())
        digest.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    _loaded_fingerprints[model] = digest.hexdigest()
    return _loaded_fingerprints[model]


class Index:
    """One version of an index, read into memory (vectors memory-mapped)."""

    def __init__(self, path: Path, version: str) -> None:
        self.path, self.version = path, version
        folder = path / version
        self.meta: dict[str, Any] = json.loads((folder / META_FILE).read_text())
        if self.meta.get("format") != FORMAT:
            raise DataError(f"{path}: index format {self.meta.get('format')}, not {FORMAT}")
        self.faiss = faiss.read_index(str(folder / FAISS_FILE))
        self.rows: pa.Table = pq.read_table(folder / ROWS_FILE)
        self.vectors: np.ndarray = np.load(folder / VECTORS_FILE, mmap_mode="r")
        self.slots = self.rows.column(SLOT).to_numpy()
        self.ids: np.ndarray = np.asarray(self.rows.column(ID).to_pylist(), dtype=object)
        self.config = IndexConfig.model_validate(self.meta["config"])
        graph = self.faiss.ntotal - len(self.meta.get("tombstones", []))  # HNSW keeps removed
        if not (len(self.slots) == len(self.vectors) == graph == self.meta["size"]):
            raise DataError(f"{path}: {version} holds different numbers of rows and vectors")
        self._as_text: dict[str, pa.ChunkedArray] = {}
        self._positions: dict[str, int] | None = None

    @property
    def root(self) -> Path:
        """The collection root: the folder of the manifest the index was built from."""
        return Path(self.meta["root"])

    @property
    def modality(self) -> str:
        return str(self.meta["modality"])

    @property
    def columns(self) -> list[str]:
        return list(self.meta["columns"])

    @property
    def kind(self) -> str:
        return str(self.meta["kind"])

    @property
    def size(self) -> int:
        return len(self.slots)

    def info(self) -> dict[str, Any]:
        """What the index is, as JSON: size, kind, parameters, model, gap and recall."""
        keep = ["kind", "params", "modality", "task", "aligned", "columns", "dim", "model"]
        keep += ["gap_correction", "gap", "recall", "built", "skipped_rows", "missing"]
        return {
            "path": str(self.path),
            "version": self.version,
            "size": self.size,
            "root": str(self.root),
            **{key: self.meta.get(key) for key in keep},
            "config": self.meta["config"],
        }

    def check_model(self, model_dir: Path) -> None:
        """ConfigError if the model in `model_dir` is not the one the index was built with."""
        if file_fingerprint(model_dir) != self.meta["model"]["files_sha256"]:
            raise ConfigError(self._other_model(f"the model in {model_dir}"))

    def check_loaded(self, model: OmnifuseModel) -> None:
        """ConfigError if `model` (loaded) is not the one the index was built with."""
        if loaded_fingerprint(model) != self.meta["model"]["weights_sha256"]:
            raise ConfigError(self._other_model("this model"))

    def _other_model(self, what: str) -> str:
        built = self.meta["model"]
        return (
            f"{self.path}: {what} is not the model the index was built with "
            f"({built['dir']}, fingerprint {built['files_sha256'][:12]}); "
            "search with that model or build a new index"
        )

    def positions(self, slots: np.ndarray) -> np.ndarray:
        """Row positions of FAISS ids (slots); -1 stays -1."""
        found = np.searchsorted(self.slots, slots)
        found = np.clip(found, 0, max(self.size - 1, 0))
        return np.where((slots >= 0) & (self.size > 0), found, -1)

    def position_of(self) -> dict[str, int]:
        """id -> row position (built once, on the first call)."""
        if self._positions is None:
            self._positions = {str(i): p for p, i in enumerate(self.ids)}
        return self._positions

    def matching(self, where: Mapping[str, str]) -> np.ndarray:
        """Positions of the rows whose every `column` equals `value` (compared as text)."""
        filterable = [ID, *self.columns]
        mask: pa.ChunkedArray | None = None
        for column, value in where.items():
            if column not in filterable:
                raise ConfigError(
                    f"--where {column}: the index stores no column '{column}'"
                    f"{closest(column, filterable)}; it has {', '.join(filterable)}"
                )
            if column not in self._as_text:
                self._as_text[column] = pc.cast(self.rows.column(column), pa.string())
            equal = pc.fill_null(pc.equal(self._as_text[column], str(value)), False)
            mask = equal if mask is None else pc.and_(mask, equal)
        if mask is None:
            return np.arange(self.size)
        return np.flatnonzero(mask.to_numpy(zero_copy_only=False))


def open_index(path: Path) -> Index:
    """The live version of the index in `path`; a DataError naming the path if there is
    none or it cannot be read."""
    path = Path(path)
    pointer = path / POINTER
    if not pointer.is_file():
        what = "no such folder" if not path.exists() else f"not an index (no {POINTER} file)"
        raise DataError(f"{path}: {what}; build one with `omnifuse index build`")
    version = pointer.read_text().strip()
    try:
        return Index(path, version)
    except OmnifuseError:
        raise
    except Exception as error:  # any damage becomes one line naming the path
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DataError(f"{path}: damaged index ({version}): {reason:.200}") from None


@contextlib.contextmanager
def updating(path: Path) -> Iterator[None]:
    """Hold the index's update lock: one update at a time."""
    path.mkdir(parents=True, exist_ok=True)
    with open(path / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DataError(f"{path}: another update of this index is running") from None
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def new_version(path: Path) -> tuple[str, Path]:
    """The next version's name and an empty temporary folder to write it in."""
    numbers = [int(p.name[1:]) for p in path.glob("v[0-9]*") if p.name[1:].isdigit()]
    name = f"v{max(numbers, default=0) + 1:06d}"
    tmp = path / f".tmp-{name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return name, tmp


def write_version(tmp: Path, meta: dict[str, Any], index: Any, rows: pa.Table) -> None:
    """The FAISS index, rows and meta into `tmp` (vectors.npy is already there)."""
    faiss.write_index(index, str(tmp / FAISS_FILE))
    pq.write_table(rows, tmp / ROWS_FILE)
    (tmp / META_FILE).write_text(json.dumps({"format": FORMAT, **meta}, indent=2) + "\n")


def commit_version(path: Path, name: str, tmp: Path) -> None:
    """Make the written version live: its folder renamed into place, then CURRENT replaced;
    the versions it supersedes are removed afterwards."""
    for file in tmp.iterdir():
        with open(file, "rb") as handle:
            os.fsync(handle.fileno())
    os.rename(tmp, path / name)
    swap_pointer(path, name)
    for old in path.glob("v[0-9]*"):
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)


def swap_pointer(path: Path, name: str) -> None:
    """Point CURRENT at version `name`, atomically (write a temporary file, os.replace)."""
    tmp = path / f".{POINTER}.tmp"
    with open(tmp, "w") as handle:
        handle.write(name + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path / POINTER)
