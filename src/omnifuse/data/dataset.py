"""From a config to preprocessed samples: resolve the manifest, split, fit, load.

Samples are loaded once into memory (files read in a thread pool, with a progress bar);
every bad cell stops loading with a message naming the manifest row and column.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from torch import Tensor
from tqdm import tqdm

from omnifuse import __version__
from omnifuse.config import DataConfig, RunConfig
from omnifuse.data.batch import Collate, Sample
from omnifuse.data.manifest import Manifest, read_manifest, split_rows
from omnifuse.errors import DataError
from omnifuse.modalities import Modality, create_modality
from omnifuse.registry import DATASETS, create_task
from omnifuse.tasks.base import Task


def cache_dir() -> Path:
    """Where built-in datasets are generated: $OMNIFUSE_CACHE or ~/.cache/omnifuse."""
    return Path(os.environ.get("OMNIFUSE_CACHE", Path.home() / ".cache" / "omnifuse"))


def resolve_manifest(data: DataConfig, *, progress: bool = False) -> Path:
    """The manifest path: as configured, or a built-in dataset generated once into the cache."""
    if data.manifest is not None:
        return data.manifest
    assert data.dataset is not None
    import omnifuse.data  # noqa: F401  (registers the built-in datasets)

    options = DATASETS.validate(data.dataset.type, data.dataset.options, "data.dataset")
    # The package version is in the key: a new release may generate a dataset differently.
    key_text = json.dumps({"version": __version__, **options}, sort_keys=True)
    key = hashlib.sha1(key_text.encode()).hexdigest()[:10]
    out = cache_dir() / "datasets" / f"{data.dataset.type}-{key}"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        DATASETS.create(data.dataset.type, out=out, progress=progress, **options)
    manifests = sorted(out.glob("manifest.*"))
    if not manifests:
        raise DataError(
            f"{out}: no manifest in the cached dataset; delete the folder to rebuild it"
        )
    return manifests[0]


def fit_config(config: RunConfig, manifest: Manifest, train: Sequence[int]) -> RunConfig:
    """The config with every modality's and task's statistics fitted on the training rows."""
    data = config.model_dump(mode="json")
    for name in config.modalities:
        fitted = create_modality(name, config.modalities[name]).fit(manifest, train)
        data["modalities"][name] = fitted.model_dump(mode="json")
    for name, task in config.model.tasks.items():
        built = create_task(
            task.type,
            name=name,
            dim=config.model.dim,
            modalities=list(config.modalities),
            **task.options,
        )
        data["model"]["tasks"][name].update(built.fit(manifest, train))
    return RunConfig.model_validate(data).check()


def load_samples(
    manifest: Manifest,
    indices: Sequence[int],
    modalities: dict[str, Modality],
    tasks: dict[str, Task],
    *,
    progress: bool = False,
    desc: str = "loading",
) -> list[Sample]:
    """Preprocess the given rows; a DataError names the row and column of the first bad cell."""

    def sample(index: int, row: dict[str, Any]) -> Sample:
        return Sample(
            id=str(row.get("id", index)),
            inputs={n: m.load(row, manifest.root) for n, m in sorted(modalities.items())},
            targets={
                n: t.load_target(row) for n, t in sorted(tasks.items()) if t.target is not None
            },
        )

    def load(index: int) -> Sample:
        return manifest.located(index, lambda row: sample(index, row))

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        results = pool.map(load, indices)
        return list(tqdm(results, total=len(indices), desc=desc, disable=not progress, leave=False))


def make_collate(samples: Sequence[Sample]) -> Collate:
    """A collate whose templates come from the first sample that has each modality and target."""
    templates: dict[str, Tensor] = {}
    target_templates: dict[str, Tensor] = {}
    for sample in samples:
        for name, value in sample.inputs.items():
            if value is not None:
                templates.setdefault(name, value)
        for name, value in sample.targets.items():
            if value is not None:
                target_templates.setdefault(name, value)
    names = set(samples[0].inputs) - set(templates) if samples else set()
    if names:
        raise DataError(f"modality '{sorted(names)[0]}' is absent from every training sample")
    return Collate(templates, target_templates)


def read_splits(config: RunConfig) -> tuple[Manifest, dict[str, list[int]]]:
    manifest = read_manifest(resolve_manifest(config.data, progress=True))
    missing = [
        column
        for name, modality in config.modalities.items()
        for column in create_modality(name, modality).columns()
        if column not in manifest.rows[0]
    ]
    if missing:
        raise DataError(f"{manifest.path.name}: no column '{missing[0]}' (named in the config)")
    splits = split_rows(
        manifest,
        column=config.data.split_column,
        val_fraction=config.data.val_fraction,
        test_fraction=config.data.test_fraction,
        seed=config.train.seed,
    )
    return manifest, splits
