"""Time series: a .npy or .csv file or a JSON list per row, patched along time.

A series is laid out time x channels: a .npy array of shape (time, channels) or (time,), a CSV
file with one row per time step and one column per channel (an optional header row is
skipped; an empty cell is a gap), or a JSON list of numbers (one channel) or of per-step lists.
NaN marks a gap. Channels are standardised with statistics fitted on the training split (on
the steps the model reads) and the series is cut to `max_length` steps (cuts are counted and
reported); a file is read no further than that, however long. The tensor is
(channels, time), so that the collate pads time and records each series' length.

The encoder embeds each patch of `patch` steps from its values (gaps set to 0, the channel
mean) and a gap indicator per value, so a partly observed patch says which steps it saw. A
patch with no observed value, or past the series' end, is masked.
"""

from __future__ import annotations

import csv
import itertools
import math
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from omnifuse.config import Component, ModalityConfig
from omnifuse.errors import ConfigError, DataError
from omnifuse.interfaces import Tokens
from omnifuse.layers.attention import SelfAttentionBlock, sinusoidal_positions
from omnifuse.manifest import Manifest
from omnifuse.modalities.base import Modality, TruncationCount, load_npy
from omnifuse.modalities.perturbations import Perturbation, frame_dropout, gaussian_noise
from omnifuse.registry import create_encoder, register_encoder, register_kind


def _number(cell: str) -> float:
    return math.nan if cell.strip() == "" else float(cell)


def read_csv_series(path: Path, steps: int | None = None) -> list[list[float]]:
    """Rows of numbers, the first `steps` of them (all without a limit: only as much of the
    file is read); a first row that is not numeric is a header and skipped."""
    with path.open(newline="") as file:
        rows = list(itertools.islice((row for row in csv.reader(file) if row), _plus(steps, 1)))
    try:
        return [[_number(cell) for cell in row] for row in rows[:steps]]
    except ValueError:
        return [[_number(cell) for cell in row] for row in rows[1:]]


def read_npy_series(path: Path, steps: int | None = None) -> np.ndarray:
    """The first `steps` steps of a .npy series, memory-mapped: only those are read."""
    array = load_npy(path)
    return np.array(array[:steps] if array.ndim else array)


def _plus(steps: int | None, more: int) -> int | None:
    return None if steps is None else steps + more


class TimeSeriesConfig(ModalityConfig):
    """A series per row: a .npy or .csv file, or a JSON list, laid out time x channels (a 1-d
    list or array is one channel); NaN marks a gap. Standardised per channel, cut to
    `max_length` steps."""

    kind: Literal["timeseries"] = "timeseries"
    column: str | None = None
    channels: int | None = Field(None, ge=1)  # fitted from the training split when unset
    max_length: int = Field(512, ge=1)
    encoder: Component = Component(type="timeseries_patch")
    mean: list[float] | None = None  # per channel, fitted on the training split
    std: list[float] | None = None


@register_kind("timeseries", config=TimeSeriesConfig)
class TimeSeriesModality(Modality[TimeSeriesConfig]):
    def perturbations(self) -> dict[str, Perturbation]:
        return {"noise": gaussian_noise, "dropout": frame_dropout}

    def __init__(self, name: str, config: TimeSeriesConfig) -> None:
        super().__init__(name, config)
        self.truncations = TruncationCount(name, "series", f"{config.max_length} steps")

    def read(self, value: Any, root: Path) -> Tensor:
        """The series as (channels, time) floats, NaN at gaps, unstandardised: from a file at
        most `max_length` + 1 steps are read (one more tells that it was cut), however long
        the file; a JSON cell is in the manifest already."""
        where = f"column '{self.column}'"
        steps = self.config.max_length + 1
        array = self.read_numbers(
            value,
            root,
            what="series",
            expected="a .npy or .csv file or a JSON list",
            files={
                ".npy": partial(read_npy_series, steps=steps),
                ".csv": partial(read_csv_series, steps=steps),
            },
        )
        if array.size == 0:  # an empty series: present, with no steps
            array = np.empty((0, self.config.channels or 1), dtype=np.float32)
        if array.ndim == 1:
            array = array[:, None]
        if array.ndim != 2:
            raise DataError(
                f"{where}: expected a series of shape (time, channels), got {tuple(array.shape)}"
            )
        if np.isinf(array).any():
            raise DataError(f"{where}: infinite values in {value!r:.60} (use NaN for gaps)")
        return torch.from_numpy(array).T.contiguous()  # (channels, time)

    def load_value(self, value: Any, root: Path) -> Tensor:
        series = self.read(value, root)
        expected = self.config.channels
        if expected is not None and series.shape[0] != expected:
            raise DataError(
                f"column '{self.column}': series has {series.shape[0]} channels, "
                f"expected {expected}"
            )
        limit = self.config.max_length
        self.truncations.add(series.shape[1] > limit)
        mean = torch.tensor(self.config.mean or [0.0] * series.shape[0])[:, None]
        std = torch.tensor(self.config.std or [1.0] * series.shape[0])[:, None]
        return (series[:, :limit] - mean) / std

    def notes(self) -> dict[str, Any]:
        return self.truncations.notes()

    def fit(self, manifest: Manifest, rows: Sequence[int], *, files: int = 256) -> TimeSeriesConfig:
        series = self.read_some(manifest, rows, files)
        if not series:
            return self.config
        channels = self.config.channels
        if channels is not None:  # a series of other channels is a bad row, reported on loading
            series = [s for s in series if s.shape[0] == channels]
            if not series:
                return self.config
        elif len({s.shape[0] for s in series}) == 1:
            channels = series[0].shape[0]
        else:
            found = sorted({s.shape[0] for s in series})
            raise DataError(
                f"column '{self.column}': training series have {found} channels; "
                f"set modalities.{self.name}.channels"
            )
        # (channels, steps): the steps the model reads, not the one more that says it was cut
        values = torch.cat([s[:, : self.config.max_length] for s in series], dim=1).double()
        observed = ~values.isnan()
        count = observed.sum(1).clamp(min=1)
        mean = torch.where(observed, values, 0.0).sum(1) / count
        var = torch.where(observed, (values - mean[:, None]) ** 2, 0.0).sum(1) / count
        return self.config.model_copy(
            update={
                "channels": channels,
                "mean": mean.tolist(),
                "std": var.sqrt().clamp(min=1e-6).tolist(),
            }
        )

    def template(self) -> Tensor:
        return torch.zeros(self.config.channels or 1, 1)

    def build_encoder(self, dim: int) -> nn.Module:
        if self.config.channels is None:
            raise ConfigError(
                f"modalities.{self.name}.channels: not set, and not fitted on training data"
            )
        encoder = self.config.encoder
        return create_encoder(
            encoder.type, dim=dim, channels=self.config.channels, **encoder.options
        )


class PatchSeriesEncoder(nn.Module):
    """Patches of `patch` steps (values and gap indicators) to tokens with sinusoidal positions,
    through transformer layers."""

    def __init__(self, *, dim: int, channels: int, patch: int, depth: int, heads: int) -> None:
        super().__init__()
        self.patch = patch
        self.embed = nn.Linear(2 * channels * patch, dim)
        self.blocks = nn.ModuleList(SelfAttentionBlock(dim=dim, heads=heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, lengths: Tensor) -> Tokens:
        # x: (B, C, T), NaN at gaps; pad time to whole patches, at least one
        steps = max(math.ceil(x.shape[-1] / self.patch), 1)
        x = F.pad(x, (0, steps * self.patch - x.shape[-1]))
        inside = torch.arange(x.shape[-1], device=x.device) < lengths[:, None]  # (B, T)
        observed = ~x.isnan() & inside[:, None, :]  # (B, C, T)
        values = torch.where(observed, x, 0.0)
        features = torch.cat([values, observed.to(x.dtype)], dim=1)  # (B, 2C, T)
        # (B, 2C, steps, patch) -> (B, steps, 2C * patch)
        patches = features.unflatten(2, (steps, self.patch)).transpose(1, 2).flatten(2)
        tokens = self.embed(patches)
        tokens = tokens + sinusoidal_positions(steps, tokens.shape[-1]).to(tokens)
        mask = observed.unflatten(2, (steps, self.patch)).any(dim=3).any(dim=1)  # (B, steps)
        for block in self.blocks:
            tokens = block(tokens, mask)
        return Tokens(self.norm(tokens), mask)


@register_encoder("timeseries_patch", kinds=("timeseries",))
def timeseries_patch(
    dim: int, channels: int, *, patch: int = 16, depth: int = 2, heads: int = 4
) -> PatchSeriesEncoder:
    """One token per `patch` time steps; patches with no observed value are masked."""
    if patch < 1:
        raise ConfigError(f"timeseries_patch: patch ({patch}) must be >= 1")
    return PatchSeriesEncoder(dim=dim, channels=channels, patch=patch, depth=depth, heads=heads)
