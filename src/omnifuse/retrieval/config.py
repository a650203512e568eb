"""IndexConfig: how an index is built and searched, settable as `--set key=value`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from omnifuse.errors import ConfigError
from omnifuse.registry import closest


class IndexConfig(BaseModel):
    """Build and search settings of an index, stored in it.

    `kind: auto` builds an exact index (inner product over every vector) below `exact_below`
    rows and the `approximate` kind above: HNSW (`hnsw_m` links per node, `ef_construction`,
    `ef_search` candidates per query) or IVF-Flat (`nlist` inverted lists, default about
    4 sqrt(N), a power of two, of which a query scans `nprobe`). `gap_correction: auto` centres each
    modality by its own centroid when that does not lower cross-modal recall on the build's
    pairs.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["auto", "exact", "ivf", "hnsw"] = "auto"
    approximate: Literal["ivf", "hnsw"] = "ivf"
    exact_below: int = Field(50_000, ge=1)
    hnsw_m: int = Field(32, ge=4)
    ef_construction: int = Field(80, ge=8)
    ef_search: int = Field(128, ge=1)
    nlist: int | None = Field(None, ge=1)
    nprobe: int = Field(128, ge=1)
    train_points: int = Field(64, ge=1, description="training vectors per inverted list")
    filter_exact_below: int = Field(
        20_000, ge=0, description="a filter matching fewer rows is searched exactly"
    )
    gap_correction: Literal["auto", "on", "off"] = "auto"
    gap_pairs: int = Field(2000, ge=2, description="pairs the modality gap is measured on")
    recall_queries: int = Field(1000, ge=1, description="queries of approximate vs exact recall")
    chunk_rows: int = Field(2048, ge=1, description="rows embedded and written at a time")
    batch_size: int = Field(256, ge=1)
    seed: int = 0

    def kind_for(self, size: int) -> Literal["exact", "ivf", "hnsw"]:
        if self.kind != "auto":
            return self.kind
        return "exact" if size < self.exact_below else self.approximate

    def lists_for(self, size: int) -> int:
        """The number of inverted lists for `size` vectors: `nlist`, or a power of two near
        4 sqrt(size), never more than one list per 39 vectors (faiss's k-means minimum)."""
        if self.nlist is not None:
            return max(1, min(self.nlist, size))
        wanted = 2 ** round(math.log2(max(1.0, 4 * math.sqrt(size))))
        return max(1, min(wanted, size // 39, 65536))


def parse_settings(settings: Sequence[str], base: IndexConfig | None = None) -> IndexConfig:
    """An IndexConfig from `key=value` settings (values read as YAML) over `base`; a bad key
    or value is one ConfigError line naming it."""
    values = (base or IndexConfig()).model_dump(exclude_unset=True)
    fields = IndexConfig.model_fields
    for setting in settings:
        key, equals, raw = setting.partition("=")
        key = key.strip()
        if not equals or not key:
            raise ConfigError(f"--set {setting!r}: write KEY=VALUE, e.g. --set nprobe=64")
        if key not in fields:
            raise ConfigError(f"--set {key}: no such index setting{closest(key, fields)}")
        try:
            values[key] = yaml.safe_load(raw)
        except yaml.YAMLError:
            values[key] = raw
    try:
        return IndexConfig.model_validate(values)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"index setting {where}: {first['msg']}") from None
