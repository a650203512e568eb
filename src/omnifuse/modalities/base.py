"""What every modality kind provides: loading a manifest cell, fitting statistics, an encoder."""

from __future__ import annotations

import json
import random
import threading
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar, cast

import numpy as np
from PIL import Image, ImageOps
from pydantic import BaseModel
from torch import Tensor, nn

from omnifuse.config import RunConfig
from omnifuse.errors import DataError
from omnifuse.manifest import Manifest
from omnifuse.modalities.perturbations import Perturbation
from omnifuse.registry import create_modality

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


_NPY_HEADERS = threading.Lock()


def load_npy(path: Path) -> np.ndarray:
    """A .npy array, memory-mapped (only what is indexed is read), never unpickling objects.
    numpy parses the header with `ast.literal_eval`, which CPython 3.11 cannot run in two
    threads at once (SystemError: AST constructor recursion depth mismatch), and a manifest's
    rows are read by a thread pool: one header is parsed at a time."""
    with _NPY_HEADERS:
        return np.load(path, mmap_mode="r", allow_pickle=False)


class LooseFile(str):
    """A path the user named directly (a loose file given to `omnifuse predict`), not read
    from a manifest: it is read wherever it lies, as the dataset-folder check is for paths
    that a manifest names."""


def reason(error: BaseException) -> str:
    """An exception as one short line: its type and message."""
    message = " ".join(str(error).split())
    return f"{type(error).__name__}: {message:.200}" if message else type(error).__name__


MAX_PIXELS = 50_000_000  # the default limit on an image's pixels, read from its header
# what a transparent pixel shows: images with an alpha channel, or a palette or colour key
# with transparency, are composited onto this background
BACKGROUND = (255, 255, 255)  # white
ALPHA_MODES = {"LA", "La", "PA", "RGBA", "RGBa"}
# the value read as 1.0 in modes wider than 8 bits (grey): 16-bit, 32-bit integer, float
FULL_SCALE = {"I;16": 65535.0, "I;16L": 65535.0, "I;16B": 65535.0, "I;16N": 65535.0}
FULL_SCALE |= {"I": 2.0**31 - 1, "F": 1.0}


def decode_image(path: Path, *, size: int, grey: bool, max_pixels: int) -> np.ndarray:
    """An image file as (size, size, channels) float32 in [0, 1]: 1 channel (Pillow's ITU-R
    601-2 luma) with `grey`, else 3 (RGB), resized bilinearly.

    The pixel count is checked from the header before anything is decoded: more than
    `max_pixels` is a ValueError (Pillow's decompression-bomb guard, about 179 million pixels,
    applies beyond). The EXIF orientation is applied. 8-bit modes (bilevel, grey, palette,
    RGB, CMYK, YCbCr, ...) are converted by Pillow and divided by 255. Wider greyscale modes
    are scaled by their range: 16-bit (I;16) divided by 65535, 32-bit integer (I) by 65535
    when all its values lie in [0, 65535] (16-bit data in a 32-bit mode, as Pillow opens many
    16-bit PNG and TIFF files) and else by 2**31 - 1, negatives 0, 32-bit float (F) clipped
    to [0, 1] (NaN is an error); in RGB
    the grey value fills each channel. Transparent pixels (an alpha channel, or a palette or
    colour key with transparency) are composited onto a white background.
    """
    target = (size, size)
    with warnings.catch_warnings():  # the size is checked below, against max_pixels
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        opened = Image.open(path)
    with opened as file:
        width, height = file.size
        if width * height > max_pixels:
            raise ValueError(
                f"{width} x {height} pixels, more than the limit of {max_pixels} (max_pixels)"
            )
        image = ImageOps.exif_transpose(file)
    if image.mode in FULL_SCALE:
        scale = FULL_SCALE[image.mode]
        if image.mode == "I":
            low, high = cast(tuple[int, int], image.getextrema())  # one band
            scale = 65535 if low >= 0 and high <= 65535 else scale
        plane = image.convert("F").resize(target, Image.Resampling.BILINEAR)
        values = np.asarray(plane, dtype=np.float32) / np.float32(scale)
        if np.isnan(values).any():
            raise ValueError("NaN pixels")
        values = np.clip(values, 0.0, 1.0)[..., None]
        return values if grey else np.repeat(values, 3, axis=2)
    if image.mode in ALPHA_MODES or "transparency" in image.info:
        background = Image.new("RGBA", image.size, (*BACKGROUND, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    pixels = image.convert("L" if grey else "RGB").resize(target, Image.Resampling.BILINEAR)
    return np.asarray(pixels, dtype=np.float32).reshape(size, size, -1) / 255.0


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
    # read files whose real path lies outside the dataset folder (`data.allow_outside_root`,
    # for trusted data); set by whoever builds the modality from a run's config
    allow_outside_root: bool = False

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
        """The preprocessed tensor for one manifest row, or None when the modality is absent.

        The one entry through which every kind reads a row (kinds define `load_value`, or
        `load_row` when they read several columns): whatever reading raises becomes a
        one-line DataError naming the column and the value (the caller adds the row).
        """
        with self.reading(row.get(self.column)):
            return self.load_row(row, root)

    def load_row(self, row: Mapping[str, Any], root: Path) -> Tensor | None:
        """`load_value` of the row's cell, or None when it is missing."""
        value = row.get(self.column)
        if is_missing(value):
            return None
        return self.load_value(value, root)

    @contextmanager
    def reading(self, value: Any) -> Iterator[None]:
        """Any exception but a DataError raised inside, by a decoder, numpy or the file system,
        as a DataError: "column 'c': cannot read 'cell': ValueError: ..."."""
        try:
            yield
        except DataError:
            raise
        except Exception as error:  # any reader's failure on a cell is the cell's problem
            columns = self.columns()
            if len(columns) == 1:
                where = f"column '{columns[0]}': cannot read {value!r:.60}"
            else:
                where = "columns " + ", ".join(f"'{c}'" for c in columns) + ": cannot read"
            raise DataError(f"{where}: {reason(error)}") from error

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
        read = manifest.readable(
            chosen, lambda row: self.read_cell(row[self.column], manifest.root)
        )
        self.files_read = len(read)
        return read

    def read_cell(self, value: Any, root: Path) -> Tensor:
        """`read`, any failure a DataError as in `load`."""
        with self.reading(value):
            return self.read(value, root)

    def cell(self, path: Path) -> Any:
        """A loose file given to this kind (see `suffixes`) as a manifest cell: its real path,
        read wherever it lies (`LooseFile`)."""
        return LooseFile(path.resolve())

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

    def locate(self, value: Any, root: Path) -> Path:
        """The real path (symlinks followed) of the file or folder a cell names, absolute or
        relative to `root` (the manifest's folder). A path whose real path is not inside the
        real `root` is refused, so a manifest cannot read files elsewhere on the machine,
        unless `allow_outside_root` is set (trusted data) or the cell is a `LooseFile`."""
        path = Path(str(value))
        path = path if path.is_absolute() else root / path
        try:
            real = path.resolve()
            inside = real.is_relative_to(root.resolve())
        except (OSError, RuntimeError) as error:  # a symlink loop, an unreadable folder
            raise DataError(
                f"column '{self.column}': cannot resolve {value}: {reason(error)}"
            ) from None
        if not (inside or self.allow_outside_root or isinstance(value, LooseFile)):
            raise DataError(f"column '{self.column}': path leaves the dataset folder: {value}")
        return real

    def resolve(self, value: Any, root: Path) -> Path:
        """The real path of the file a cell names (see `locate`); every kind's files go
        through it."""
        path = self.locate(value, root)
        if not path.is_file():
            raise DataError(f"column '{self.column}': file not found: {value}")
        return path


def modalities_of(config: RunConfig) -> dict[str, Modality]:
    """Each modality of a run config by name (sorted), built by its kind: what reads a run's
    data (`data.Readers`) and what a model reports with, each reading files as
    `data.allow_outside_root` says."""
    built = {n: create_modality(n, config.modalities[n]) for n in sorted(config.modalities)}
    for modality in built.values():
        modality.allow_outside_root = config.data.allow_outside_root
    return built
