"""What every modality kind provides: loading a manifest cell, fitting statistics, an encoder."""

from __future__ import annotations

import json
import random
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
from pydantic import BaseModel
from torch import Tensor, nn

from omnifuse.errors import DataError
from omnifuse.manifest import Manifest
from omnifuse.modalities.perturbations import Perturbation

C = TypeVar("C", bound=BaseModel)


class TruncationCount:
    """How many loaded cells were cut to a maximum length; safe to update from loader threads."""

    def __init__(self, modality: str, noun: str, limit: str) -> None:
        self.modality, self.noun, self.limit = modality, noun, limit
        self.seen = self.cut = 0
        self._lock = threading.Lock()

    def add(self, cut: bool) -> None:
        with self._lock:
            self.seen += 1
            self.cut += cut

    def notes(self) -> dict[str, Any]:
        """`{noun: seen, "truncated": cut}`, with a one-line "message" when any was cut."""
        if not self.seen:
            return {}
        notes: dict[str, Any] = {self.noun: self.seen, "truncated": self.cut}
        if self.cut:
            notes["message"] = (
                f"{self.modality}: {self.cut} of {self.seen} {self.noun} truncated to {self.limit}"
            )
        return notes


def load_npy(path: Path) -> np.ndarray:
    """A .npy array, never unpickling objects."""
    return np.load(path, allow_pickle=False)


def is_missing(value: Any) -> bool:
    """None, NaN and the empty string mark an absent cell."""
    return value is None or value == "" or (isinstance(value, float) and value != value)


class Modality(ABC, Generic[C]):
    """A named input stream of one kind, configured by that kind's config model.

    A kind is one module: its config model (`kind: Literal[name]`), this class's subclass
    registered with `@register_kind(name, config=...)`, and its encoders registered with
    `@register_encoder(name, kinds=(kind,))`. An encoder builder takes `dim` and what its
    kind's `build_encoder` passes as positional-or-keyword parameters, and its user options
    (the config keys) as keyword-only ones.
    """

    # loose files with these suffixes are cells of this kind (`omnifuse predict cat.png`,
    # `omnifuse data validate` without a config)
    suffixes: ClassVar[tuple[str, ...]] = ()

    def __init__(self, name: str, config: C) -> None:
        self.name = name
        self.config = config
        self.files_read = 0  # by the last fit, to fit statistics

    @property
    def column(self) -> str:
        return getattr(self.config, "column", None) or self.name

    def columns(self) -> list[str]:
        """The manifest columns this modality reads."""
        return [self.column]

    def load(self, row: Mapping[str, Any], root: Path) -> Tensor | None:
        """The preprocessed tensor for one manifest row, or None when the modality is absent."""
        value = row.get(self.column)
        if is_missing(value):
            return None
        return self.load_value(value, root)

    def load_value(self, value: Any, root: Path) -> Tensor:
        """Preprocess one present cell; raise DataError naming the column on bad input."""
        raise NotImplementedError

    def fit(self, manifest: Manifest, rows: Sequence[int], *, files: int = 256) -> C:
        """The config with statistics fitted on the training rows, reading at most `files` of
        their files (`read_some`); kinds without any return it as is."""
        return self.config

    def notes(self) -> dict[str, Any]:
        """What loading changed, counted since this object was made, for reports: for example
        `{"texts": 3000, "truncated": 12, "message": "text: 12 of 3000 texts truncated..."}`
        ("message", one line, only when something needs saying); empty when nothing was counted.
        """
        return {}

    def read(self, value: Any, root: Path) -> Tensor:
        """One cell before normalisation; kinds that fit statistics on their files define it."""
        raise NotImplementedError

    def read_some(self, manifest: Manifest, rows: Sequence[int], limit: int) -> list[Tensor]:
        """`read` on up to `limit` of `rows` (a seeded choice) where this modality is present;
        how many were read is kept in `files_read`."""
        present = [i for i in rows if not is_missing(manifest.rows[i].get(self.column))]
        chosen = sorted(random.Random(0).sample(present, min(limit, len(present))))
        read = manifest.readable(chosen, lambda row: self.read(row[self.column], manifest.root))
        self.files_read = len(read)
        return read

    def cell(self, path: Path) -> Any:
        """A loose file given to this kind (see `suffixes`) as a manifest cell: its path."""
        return str(path.resolve())

    def perturbations(self) -> dict[str, Perturbation]:
        """The test-time perturbations of this kind for the robustness sweep, by name (the
        sweep adds `missing` for every kind)."""
        return {}

    @abstractmethod
    def build_encoder(self, dim: int) -> nn.Module:
        """The encoder named in the config, built for this modality's fitted shape."""

    @abstractmethod
    def template(self) -> Tensor:
        """A zero input of this kind's shape and dtype (length 1 on a variable last axis), for
        batches in which no sample has this modality."""

    def read_numbers(
        self,
        value: Any,
        root: Path,
        *,
        what: str,
        expected: str,
        files: Mapping[str, Callable[[Path], Any]],
    ) -> np.ndarray:
        """A cell of numbers as float32 (None becomes NaN): a list, a JSON list, or a file read
        by the reader of its suffix in `files`. Bad cells raise a DataError naming the column."""
        where = f"column '{self.column}'"
        suffix = Path(value).suffix.lower() if isinstance(value, str) else ""
        try:
            if isinstance(value, list):
                data: Any = value
            elif isinstance(value, str) and value.lstrip().startswith("["):
                data = json.loads(value)
            elif suffix in files:
                data = files[suffix](self.resolve(value, root))
            else:
                raise DataError(f"{where}: expected {expected}, got {value!r:.60}")
            return np.array(data, dtype=np.float32)
        except json.JSONDecodeError as error:
            raise DataError(f"{where}: not a valid JSON list: {error.msg}") from None
        except (ValueError, TypeError, OSError) as error:
            raise DataError(f"{where}: cannot read {what} {value!r:.60}: {error}") from None

    def resolve(self, value: str, root: Path) -> Path:
        path = Path(value)
        path = path if path.is_absolute() else root / path
        if not path.is_file():
            raise DataError(f"column '{self.column}': file not found: {value}")
        return path
