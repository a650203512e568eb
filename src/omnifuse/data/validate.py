"""Check every row of a manifest and list each one that cannot be used.

With a run config, each modality and target is checked as training would read it (label
lists and statistics fitted on the training split). Without one, columns whose values name
image or audio files are recognised by their extension and every such file is opened.
"""

from __future__ import annotations

from pathlib import Path

from omnifuse.config import AudioConfig, ImageConfig, RunConfig
from omnifuse.data.dataset import BadRow, fit_config, load_samples
from omnifuse.data.manifest import Manifest, read_manifest, split_rows
from omnifuse.modalities import Modality, create_modality
from omnifuse.modalities.base import is_missing
from omnifuse.model import OmnifuseModel
from omnifuse.tasks.base import Task

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".aiff", ".aif")


def file_columns(manifest: Manifest) -> dict[str, Modality]:
    """An image or audio modality for each column whose present values all name such files."""
    modalities: dict[str, Modality] = {}
    for column in manifest.rows[0]:
        values = [r.get(column) for r in manifest.rows if not is_missing(r.get(column))]
        if not values or not all(isinstance(v, str) for v in values):
            continue
        suffixes = {Path(str(v)).suffix.lower() for v in values}
        if suffixes <= set(IMAGE_SUFFIXES):
            modalities[column] = create_modality(column, ImageConfig(column=column))
        elif suffixes <= set(AUDIO_SUFFIXES):
            modalities[column] = create_modality(column, AudioConfig(column=column))
    return modalities


def validate_manifest(
    path: str | Path, config: RunConfig | None = None, *, progress: bool = False
) -> tuple[Manifest, list[BadRow]]:
    """The manifest and its bad rows, each with the first problem found in it."""
    manifest = read_manifest(path)
    modalities: dict[str, Modality]
    tasks: dict[str, Task] = {}
    if config is None:
        modalities = file_columns(manifest)
    else:
        splits = split_rows(
            manifest,
            column=config.data.split_column,
            val_fraction=config.data.val_fraction,
            test_fraction=config.data.test_fraction,
            seed=config.train.seed,
        )
        model = OmnifuseModel.build(fit_config(config, manifest, splits["train"]))
        modalities, tasks = model.modalities, model.task_dict()
    _, bad = load_samples(
        manifest,
        range(len(manifest.rows)),
        modalities,
        tasks,
        progress=progress,
        desc="validating",
    )
    return manifest, sorted(bad, key=lambda row: row.index)
