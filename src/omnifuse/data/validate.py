"""Check every row of a manifest and list each one that cannot be used.

With a run config, each modality and target is checked as training would read it (label
lists and statistics fitted on the training split). Without one, a column whose values all
name files of one modality kind's suffixes (images, audio) is read as that kind, with its
default settings, and every such file is opened.

Rows without a task's label are not bad (the task leaves them out), but they are counted: one
warning per task says how many of each split lack it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import ValidationError

from omnifuse.config import RunConfig
from omnifuse.data.dataset import (
    BadRow,
    Readers,
    check_columns,
    fit_config,
    label_notes,
    load_samples,
)
from omnifuse.manifest import Manifest, read_manifest, split_rows
from omnifuse.modalities.base import Modality, is_missing
from omnifuse.registry import KINDS, create_modality

logger = logging.getLogger(__name__)


def kind_suffixes(kind: str) -> tuple[str, ...]:
    modality: type[Modality] = KINDS.builder(kind)  # type: ignore[assignment]
    return modality.suffixes


def file_columns(manifest: Manifest) -> dict[str, Modality]:
    """A modality for each column whose present values all name files of one kind's
    suffixes (a kind whose config needs no more than the column to be built)."""
    modalities: dict[str, Modality] = {}
    rows = [row for i, row in enumerate(manifest.rows) if i not in manifest.problems]
    for column in manifest.columns:
        values = [r.get(column) for r in rows if not is_missing(r.get(column))]
        if not values or not all(isinstance(v, str) for v in values):
            continue
        suffixes = {Path(str(v)).suffix.lower() for v in values}
        kinds = [k for k in KINDS.names() if suffixes <= set(kind_suffixes(k))]
        for kind in kinds:
            try:
                config = KINDS.info(kind)["config"](kind=kind, column=column)
            except ValidationError:  # the kind needs more settings than a column
                continue
            modalities[column] = create_modality(column, config)
            break
    return modalities


class Validation(NamedTuple):
    manifest: Manifest
    bad: list[BadRow]  # each bad row with the first problem found in it, in row order
    labels: dict[str, dict[str, Any]]  # with a config: per task, rows lacking a label


def validate_manifest(
    path: str | Path, config: RunConfig | None = None, *, progress: bool = False
) -> Validation:
    """The manifest, its bad rows and (with a config) how many rows of each split have no
    label for each task (`label_notes`; also logged as warnings)."""
    manifest = read_manifest(path)
    labels: dict[str, dict[str, Any]] = {}
    if config is None:
        readers = Readers(file_columns(manifest), {})
    else:
        check_columns(config, manifest)
        splits = split_rows(
            manifest,
            column=config.data.split_column,
            val_fraction=config.data.val_fraction,
            test_fraction=config.data.test_fraction,
            seed=config.train.seed,
        )
        readers = Readers.of(fit_config(config, manifest, splits["train"]))
        labels = label_notes(manifest, splits, readers.tasks)
        for note in labels.values():
            if "message" in note:
                logger.warning(note["message"])
    _, bad = load_samples(
        manifest, range(len(manifest.rows)), readers, progress=progress, desc="validating"
    )
    return Validation(manifest, sorted(bad, key=lambda row: row.index), labels)
