"""From a config to preprocessed samples: resolve the manifest, split, fit, load.

Every row is read once before training (files in a thread pool, with a progress bar), each bad
one collected with a message naming its manifest row and column; the samples are kept in
memory, or, streaming (`data.stream`), read again from their files at each use by DataLoader
workers (`SampleSet`, `batches`).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
from abc import abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from omnifuse.config import DataConfig, RunConfig
from omnifuse.errors import ConfigError, DataError
from omnifuse.interfaces import Batch, Collate, Sample
from omnifuse.manifest import Manifest, read_manifest, split_rows
from omnifuse.modalities.base import Modality, modalities_of
from omnifuse.registry import DATASETS, closest, create_modality
from omnifuse.tasks.base import TaskSpec

CHUNK = 1024  # rows read at a time when checking: bounds the memory of a streaming check


def cache_dir() -> Path:
    """Where built-in datasets are generated: $OMNIFUSE_CACHE or ~/.cache/omnifuse."""
    return Path(os.environ.get("OMNIFUSE_CACHE", Path.home() / ".cache" / "omnifuse"))


def resolve_manifest(data: DataConfig, *, progress: bool = False) -> Path:
    """The manifest path: as configured, or a built-in dataset generated once into the cache."""
    if data.manifest is not None:
        return data.manifest
    if data.dataset is None:
        raise ConfigError("data: a run from shards reads them, not a manifest (data.shards)")
    options = DATASETS.validate(data.dataset.type, data.dataset.options, "data.dataset")
    # The package's and the dataset's versions are in the key: either may change what is built.
    key_text = json.dumps(
        {
            "version": importlib.metadata.version("omnifuse"),
            "dataset_version": DATASETS.version(data.dataset.type),
            **options,
        },
        sort_keys=True,
    )
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


@dataclass(frozen=True)
class Readers:
    """What reads a config's manifest rows: its modalities (inputs) and its tasks' specs
    (targets). Plain objects: fitting, loading and validating never build an nn.Module."""

    modalities: dict[str, Modality]
    tasks: dict[str, TaskSpec]

    @classmethod
    def of(cls, config: RunConfig) -> Readers:
        tasks = {name: config.task_spec(name) for name in sorted(config.model.tasks)}
        return cls(modalities_of(config), tasks)

    def collate(self) -> Collate:
        """The collate for these modalities and targets, whatever a batch holds."""
        return Collate(
            {name: modality.template() for name, modality in self.modalities.items()},
            {n: t.target_template() for n, t in self.tasks.items() if t.target is not None},
        )


def fit_config(config: RunConfig, manifest: Manifest, train: Sequence[int]) -> RunConfig:
    """The config with every modality's and task's statistics fitted on the training rows.

    Only values left unset (None) are filled: a class list or a statistic given in the
    config is kept as given. Rows the manifest could not read whole are left out.
    """
    train = [index for index in train if index not in manifest.problems]
    data = config.model_dump(mode="json")
    readers = Readers.of(config)
    fitted_on = {}
    for name, modality in readers.modalities.items():
        fitted = modality.fit(manifest, train, files=config.data.fit_rows)
        _fill_unset(data["modalities"][name], fitted.model_dump(mode="json"))
        fitted_on[name] = modality.files_read
    _fill_unset(data["data"], {"fitted_on": fitted_on})
    for name, task in readers.tasks.items():
        _fill_unset(data["model"]["tasks"][name], task.fit(manifest, train))
    return RunConfig.model_validate(data).check()


def reuse_fitted(config: RunConfig, source: RunConfig) -> RunConfig:
    """`config` with the fitted preprocessing of `source` (a pre-trained model's config): each
    modality of the same name and kind takes `source`'s values for the fields it leaves unset,
    so a fine-tuned model reads its inputs exactly as the model it starts from did."""
    data = config.model_dump(mode="json")
    for name, modality in config.modalities.items():
        theirs = source.modalities.get(name)
        if theirs is not None and theirs.kind == modality.kind:
            _fill_unset(data["modalities"][name], theirs.model_dump(mode="json"))
    return RunConfig.model_validate(data).check()


def _fill_unset(values: dict[str, Any], fitted: dict[str, Any]) -> None:
    for key, value in fitted.items():
        if values.get(key) is None:
            values[key] = value


def read_row(manifest: Manifest, index: int, readers: Readers) -> Sample | BadRow:
    """Row `index` preprocessed, or the first problem found in it (row, column, what)."""
    if index in manifest.problems:
        return BadRow(index, manifest.where(index), manifest.problems[index])
    row = manifest.rows[index]
    try:
        return Sample(
            id=str(row.get("id", index)),
            inputs={n: m.load(row, manifest.root) for n, m in readers.modalities.items()},
            targets={
                n: t.load_target(row) for n, t in readers.tasks.items() if t.target is not None
            },
        )
    except DataError as error:
        return BadRow(index, manifest.where(index), str(error))


def load_samples(
    manifest: Manifest,
    indices: Sequence[int],
    readers: Readers,
    *,
    keep: bool = True,
    progress: bool = False,
    desc: str = "loading",
) -> tuple[list[Sample], list[BadRow]]:
    """Preprocess the given rows: the samples of the good ones, and every bad row with the
    first problem found in it (row, column, what is wrong). Without `keep`, the rows are only
    checked: no sample is kept, and memory stays bounded by a chunk of rows."""
    samples: list[Sample] = []
    bad: list[BadRow] = []
    bar = tqdm(total=len(indices), desc=desc, disable=not progress, leave=False)
    # one row (a query) is read here: starting threads would cost more than reading it
    threads = min(os.cpu_count() or 1, len(indices))
    with ThreadPoolExecutor(max_workers=threads) if threads > 1 else nullcontext() as pool:
        each = pool.map if pool is not None else map
        for start in range(0, len(indices), CHUNK):
            chunk = indices[start : start + CHUNK]
            for result in each(lambda i: read_row(manifest, i, readers), chunk):
                if isinstance(result, BadRow):
                    bad.append(result)
                elif keep:
                    samples.append(result)
            bar.update(len(chunk))
    bar.close()
    return samples, bad


class LazySamples(Sequence[Sample]):
    """Samples made when they are asked for: an index gives one (`sample`), a slice a list."""

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def sample(self, index: int) -> Sample:
        """Sample `index`, 0 <= index < len(self)."""

    @overload
    def __getitem__(self, index: int) -> Sample: ...

    @overload
    def __getitem__(self, index: slice) -> list[Sample]: ...

    def __getitem__(self, index: int | slice) -> Sample | list[Sample]:
        if isinstance(index, slice):
            return [self.sample(i) for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self.sample(index)


class SampleSet(LazySamples):
    """The samples of some manifest rows: held in memory (`loaded`) or read from their files
    each time they are asked for (streaming: memory bounded by what is asked at once). An
    index gives one sample, a slice a list of them; `batches` reads them in worker processes."""

    def __init__(
        self,
        manifest: Manifest,
        rows: Sequence[int],
        readers: Readers,
        loaded: Sequence[Sample] | None = None,
    ) -> None:
        self.manifest, self.rows, self.readers, self.loaded = manifest, list(rows), readers, loaded

    def __len__(self) -> int:
        return len(self.rows)

    def sample(self, index: int) -> Sample:
        if self.loaded is not None:
            return self.loaded[index]
        read = read_row(self.manifest, self.rows[index], self.readers)
        if isinstance(read, BadRow):  # it read cleanly when checked: the file changed since
            raise DataError(f"{read} (the row read cleanly before training)")
        return read

    def only(self, modalities: Sequence[str]) -> SampleSet:
        """The same rows seeing only `modalities`."""
        readers = Readers(
            {n: m for n, m in self.readers.modalities.items() if n in modalities},
            self.readers.tasks,
        )
        loaded = None if self.loaded is None else _Only(self.loaded, modalities)
        return SampleSet(self.manifest, self.rows, readers, loaded)


class _Only(LazySamples):
    """Samples seeing only some modalities, each made so when it is asked for."""

    def __init__(self, samples: Sequence[Sample], modalities: Sequence[str]) -> None:
        self.samples, self.modalities = samples, modalities

    def __len__(self) -> int:
        return len(self.samples)

    def sample(self, index: int) -> Sample:
        return self.samples[index].only(self.modalities)


def batches(
    samples: Sequence[Sample],
    chunks: Iterable[Sequence[int]],
    collate: Collate,
    *,
    workers: int = 0,
    pin: bool = False,
) -> Iterator[Batch]:
    """The batch of each chunk of indices into `samples`, read and collated by `workers`
    processes (0: in this one), in the order of `chunks`; with `pin` (for a model on CUDA)
    in page-locked memory, which copies to the GPU while the CPU goes on. A row that fails to
    read stops with its located message, as when it is checked."""
    loader = DataLoader(
        _Located(samples),
        batch_sampler=chunks,  # type: ignore[arg-type]
        collate_fn=_Collating(collate),
        num_workers=workers,
        pin_memory=pin,
        generator=torch.Generator(),  # never draws from torch's global generator
    )
    for batch in loader:
        if isinstance(batch, str):
            raise DataError(batch)
        yield batch


class _Located(torch.utils.data.Dataset[Sample | str]):
    """`samples[i]`, or the one-line message of the DataError reading it raised (a worker's
    exception would reach the main process as a traceback)."""

    def __init__(self, samples: Sequence[Sample]) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Sample | str:
        try:
            return self.samples[index]
        except DataError as error:
            return str(error)


class _Collating:
    """The collate of a chunk's samples, or the first message among them."""

    def __init__(self, collate: Collate) -> None:
        self.collate = collate

    def __call__(self, items: list[Sample | str]) -> Batch | str:
        for item in items:
            if isinstance(item, str):
                return item
        return self.collate(items)  # type: ignore[arg-type]


@dataclass(frozen=True)
class BadRow:
    """A manifest row that cannot be used: its index, where it is, and what is wrong."""

    index: int
    where: str
    problem: str

    def __str__(self) -> str:
        return f"{self.where}, {self.problem}"


class BadRowsError(DataError):
    """Rows that cannot be used; the message names the first, `rows` holds them all."""

    def __init__(self, manifest: Manifest, rows: list[BadRow]) -> None:
        self.rows = rows
        more = f" (and {len(rows) - 1} more bad rows)" if len(rows) > 1 else ""
        super().__init__(
            f"{rows[0]}{more}; list them with `omnifuse data validate {manifest.path.name}`, "
            "or leave them out with --skip-bad"
        )


def check_columns(config: RunConfig, manifest: Manifest) -> None:
    """Refuse a column the config names that the manifest lacks, with the closest it has: a
    misspelt target would otherwise read as a task without labels."""
    columns = manifest.columns
    for name in sorted(config.modalities):
        for column in create_modality(name, config.modalities[name]).columns():
            if column not in columns:
                raise DataError(
                    f"{manifest.path.name}: no column '{column}'{closest(column, columns)} "
                    f"(named by modality '{name}')"
                )
    for name in sorted(config.model.tasks):
        target = config.task_spec(name).target
        if target is not None and target not in columns:
            raise DataError(
                f"model.tasks.{name}.target: no column '{target}' in {manifest.path.name}"
                f"{closest(target, columns)}"
            )


def label_notes(
    manifest: Manifest, splits: dict[str, list[int]], tasks: dict[str, TaskSpec]
) -> dict[str, dict[str, Any]]:
    """task -> `{"column": target, "unlabelled": {split: rows without a label}}` for each task
    with a target column, with a one-line "message" when any row lacks its label. Such rows
    are kept (their other tasks still train) and left out of the task's loss and metrics.
    Rows the manifest could not read whole are not counted."""
    splits = {s: [i for i in rows if i not in manifest.problems] for s, rows in splits.items()}
    notes: dict[str, dict[str, Any]] = {}
    for name, task in tasks.items():
        if task.target is None:
            continue
        counts = {
            split: sum(not task.has_label(manifest.rows[i]) for i in rows)
            for split, rows in splits.items()
        }
        notes[name] = {"column": task.target, "unlabelled": counts}
        if any(counts.values()):
            parts = [f"{n} of {len(splits[split])} {split}" for split, n in counts.items() if n]
            notes[name]["message"] = (
                f"task '{name}': {', '.join(parts)} rows have no label in column "
                f"'{task.target}' (left out of its loss and metrics)"
            )
    return notes


def read_splits(config: RunConfig) -> tuple[Manifest, dict[str, list[int]]]:
    manifest = read_manifest(resolve_manifest(config.data, progress=True))
    check_columns(config, manifest)
    splits = split_rows(
        manifest,
        column=config.data.split_column,
        val_fraction=config.data.val_fraction,
        test_fraction=config.data.test_fraction,
        seed=config.train.seed,
    )
    return manifest, splits


def subsample(rows: Sequence[int], fraction: float, seed: int) -> list[int]:
    """A `fraction` of `rows` (at least one), drawn with `seed`, in their original order."""
    if fraction >= 1:
        return list(rows)
    keep = max(1, round(fraction * len(rows)))
    chosen = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed))[:keep]
    return sorted(rows[i] for i in chosen.tolist())
