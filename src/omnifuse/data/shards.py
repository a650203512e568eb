"""Preprocessed samples on disk, as Arrow IPC shard files: `omnifuse data shard` writes a
manifest's samples once, and a config with `data.shards: DIR` trains from them without
decoding an image or a recording again.

    DIR/shards.json                    the fitted config, the manifest, each split's files and
                                       rows, the rows left out, what loading cut
    DIR/train-00000.arrow, ...         Arrow IPC files of `rows_per_shard` samples: columns
                                       row, id, input.<modality>, shape.<modality>,
                                       target.<task>, target_shape.<task> (tensor bytes and
                                       shapes; an absent input or label is null)

Arrow IPC is the format pandas, polars, DuckDB and Hugging Face datasets read; memory-mapped,
any sample is read at once, so the (seed, epoch) training order and exact resume stay as they
are. The folder is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch import Tensor
from tqdm import tqdm

from omnifuse.config import RunConfig
from omnifuse.data.dataset import (
    BadRow,
    BadRowsError,
    LazySamples,
    Readers,
    fit_config,
    load_samples,
    read_splits,
    reuse_fitted,
)
from omnifuse.errors import ConfigError, DataError
from omnifuse.interfaces import Collate, Sample
from omnifuse.manifest import Manifest, read_manifest
from omnifuse.model import OmnifuseModel
from omnifuse.pretrained.encoder import PretrainedEncoder

META_FILE = "shards.json"
FORMAT = 1  # bump when the layout changes
FEATURE_BATCH = 64  # samples a backbone reads at once when storing its features


def write_shards(
    config: RunConfig,
    out: Path,
    *,
    rows_per_shard: int = 4096,
    skip_bad: bool = False,
    features: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Fit `config` on its manifest's training split, preprocess every row and write the
    shards to `out`; returns what `shards.json` records. A bad row stops it with a
    BadRowsError, unless `skip_bad` (then it is left out and listed). With `features`, each
    modality whose encoder is a frozen pretrained backbone is stored as that backbone's
    output tokens, so that training from the shards never runs it."""
    if out.exists():
        raise DataError(f"{out}: already exists; choose another --out")
    manifest, indices = read_splits(config)
    config = fit_config(config, manifest, indices["train"])
    readers = Readers.of(config)
    backbones = _frozen_encoders(config, readers) if features else {}
    partial = out.with_name(f".{out.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    splits, bad = {}, []
    bar = tqdm(total=len(manifest.rows), desc="sharding", unit="row", disable=not progress)
    try:
        for split, rows in indices.items():
            splits[split], rejected = _write_split(
                partial, split, manifest, rows, readers, backbones, rows_per_shard, bar
            )
            bad += rejected
        if bad and not skip_bad:
            raise BadRowsError(manifest, sorted(bad, key=lambda row: row.index))
        meta = {
            "format": FORMAT,
            "config": config.model_dump(mode="json"),
            "manifest": str(manifest.path.resolve()),
            "splits": splits,
            "skipped": [{"row": r.index + 1, "where": r.where, "problem": r.problem} for r in bad],
            "notes": {n: note for n, m in readers.modalities.items() if (note := m.notes())},
            "dtypes": _dtypes(readers) | {f"input.{n}": "float32" for n in backbones},
            "features": {
                n: {"width": e.width, "backbone": e.fingerprint()} for n, e in backbones.items()
            },
        }
        (partial / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        os.replace(partial, out)
    finally:
        bar.close()
        shutil.rmtree(partial, ignore_errors=True)
    return meta


def _write_split(
    folder: Path,
    split: str,
    manifest: Manifest,
    rows: Sequence[int],
    readers: Readers,
    backbones: dict[str, PretrainedEncoder],
    rows_per_shard: int,
    bar: tqdm,
) -> tuple[dict[str, Any], list[BadRow]]:
    """One split's shard files; its files and kept rows, and its bad rows."""
    files: list[str] = []
    kept: list[int] = []
    bad: list[BadRow] = []
    for start in range(0, len(rows), rows_per_shard):
        chunk = rows[start : start + rows_per_shard]
        samples, rejected = load_samples(manifest, chunk, readers)
        bad += rejected
        good = [i for i in chunk if i not in {r.index for r in rejected}]
        samples = _with_features(samples, readers, backbones)
        name = f"{split}-{len(files):05d}.arrow"
        table = _table(samples, good, readers)
        with pa.OSFile(str(folder / name), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
            w.write_table(table)
        files.append(name)
        kept += good
        bar.update(len(chunk))
    return {"files": files, "rows": kept}, bad


def _frozen_encoders(config: RunConfig, readers: Readers) -> dict[str, PretrainedEncoder]:
    """The modalities whose encoder is a frozen pretrained backbone, with that encoder."""
    found = {}
    for name, modality in readers.modalities.items():
        encoder = modality.build_encoder(config.model.dim)
        if isinstance(encoder, PretrainedEncoder) and encoder.frozen:
            found[name] = encoder.eval()
    if not found:
        raise ConfigError(
            "--features: no modality has a frozen pretrained encoder (a pretrained encoder "
            "with train: none), whose features could be stored"
        )
    return found


def _with_features(
    samples: list[Sample], readers: Readers, backbones: dict[str, PretrainedEncoder]
) -> list[Sample]:
    """`samples` with each of `backbones`' modalities replaced by its backbone's tokens,
    stored transposed (width, n) so that batches pad them on their last axis like any input."""
    if not backbones:
        return samples
    stored: dict[str, list[Tensor | None]] = {}
    for name, encoder in backbones.items():
        stack = Collate({name: readers.modalities[name].template()}, {})
        stored[name] = []
        for start in range(0, len(samples), FEATURE_BATCH):
            part = samples[start : start + FEATURE_BATCH]
            batch = stack([Sample(s.id, {name: s.inputs[name]}, {}) for s in part])
            found = encoder.features(batch.inputs[name], batch.lengths[name])
            stored[name] += [None if f is None else f.T.contiguous() for f in found]
    return [
        replace(s, inputs=s.inputs | {n: values[i] for n, values in stored.items()})
        for i, s in enumerate(samples)
    ]


def _table(samples: list[Sample], rows: list[int], readers: Readers) -> pa.Table:
    columns: dict[str, Any] = {"row": pa.array(rows, pa.int64()), "id": [s.id for s in samples]}
    for name in readers.modalities:
        values = [s.inputs[name] for s in samples]
        columns[f"input.{name}"] = pa.array([_bytes(v) for v in values], pa.binary())
        columns[f"shape.{name}"] = pa.array([_shape(v) for v in values], pa.list_(pa.int64()))
    for name in _targets(readers):
        values = [s.targets[name] for s in samples]
        columns[f"target.{name}"] = pa.array([_bytes(v) for v in values], pa.binary())
        columns[f"target_shape.{name}"] = pa.array(
            [_shape(v) for v in values], pa.list_(pa.int64())
        )
    return pa.table(columns)


def _bytes(tensor: Tensor | None) -> bytes | None:
    return None if tensor is None else tensor.contiguous().numpy().tobytes()


def _shape(tensor: Tensor | None) -> list[int] | None:
    return None if tensor is None else list(tensor.shape)


def _targets(readers: Readers) -> list[str]:
    return [name for name, task in readers.tasks.items() if task.target is not None]


def _dtypes(readers: Readers) -> dict[str, str]:
    dtypes = {f"input.{n}": str(m.template().dtype) for n, m in readers.modalities.items()}
    for name in _targets(readers):
        dtypes[f"target.{name}"] = str(readers.tasks[name].target_template().dtype)
    return {key: value.removeprefix("torch.") for key, value in dtypes.items()}


@dataclass
class Shards:
    """Shards opened for training: the config they were fitted with, the manifest they came
    from (for reports that show files), each split's samples and rows."""

    config: RunConfig
    manifest: Manifest
    splits: dict[str, ShardSamples]
    rows: dict[str, list[int]]
    notes: dict[str, dict[str, Any]]
    skipped: list[BadRow]
    features: dict[str, dict[str, Any]]  # modality -> width, backbone: stored as features

    def collate(self) -> Collate:
        """The collate of the config, with (width, 1) templates for stored features."""
        collate = Readers.of(self.config).collate()
        for name, stored in self.features.items():
            collate.templates[name] = torch.zeros(stored["width"], 1)
        return collate


def read_features(model: OmnifuseModel, features: dict[str, dict[str, Any]]) -> None:
    """Make the encoders of the modalities stored as features (`data shard --features`) read
    them, not run their backbones; the backbone must be the one that computed them."""
    for name, stored in features.items():
        if name not in model.encoders:
            continue  # a model that does not see this modality (a single-modality baseline)
        encoder = model.encoders[name]
        if not (isinstance(encoder, PretrainedEncoder) and encoder.frozen) or (
            encoder.fingerprint() != stored["backbone"]
        ):
            raise ConfigError(
                f"modalities.{name}.encoder: the shards hold features of another backbone "
                f"({stored['backbone']}); write them again for this model"
            )
        encoder.precomputed = True


def open_shards(config: RunConfig) -> Shards:
    """The shards in `config.data.shards`, with `config`'s preprocessing checked against the
    one they were written with (unset statistics are taken from them)."""
    assert config.data.shards is not None
    folder = config.data.shards
    meta = _meta(folder)
    written = RunConfig.model_validate(meta["config"])
    config = reuse_fitted(config, written)
    for name, modality in config.modalities.items():
        theirs = written.modalities.get(name)
        if theirs is None or theirs.model_dump() != modality.model_dump():
            raise ConfigError(
                f"modalities.{name}: not as the shards in {folder} were written "
                f"({'absent there' if theirs is None else 'different settings'}); "
                "write the shards again with this config"
            )
    config = _task_targets(config, written, folder)
    dtypes = {key: getattr(torch, value) for key, value in meta["dtypes"].items()}
    targets = [n for n in config.model.tasks if f"target.{n}" in dtypes]
    splits = {
        split: ShardSamples(folder, info["files"], dtypes, sorted(config.modalities), targets)
        for split, info in meta["splits"].items()
    }
    skipped = [BadRow(r["row"] - 1, r["where"], r["problem"]) for r in meta["skipped"]]
    rows = {split: info["rows"] for split, info in meta["splits"].items()}
    features = meta.get("features", {})
    manifest = read_manifest(meta["manifest"])
    return Shards(config, manifest, splits, rows, meta["notes"], skipped, features)


def _meta(folder: Path) -> dict[str, Any]:
    path = folder / META_FILE
    try:
        meta = json.loads(path.read_text())
    except OSError:
        raise DataError(f"{folder}: no {META_FILE}; not a folder of omnifuse shards") from None
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: not valid JSON ({error.msg}); write the shards again") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DataError(f"{path}: shards of another format; write them again with this omnifuse")
    return meta


def _task_targets(config: RunConfig, written: RunConfig, folder: Path) -> RunConfig:
    """`config` with each labelled task's fitted options (class lists, scaling, merges) taken
    from the same task of the shards, which must hold its labels."""
    data = config.model_dump(mode="json")
    for name, task in config.model.tasks.items():
        if config.task_spec(name).target is None:
            continue
        theirs = written.model.tasks.get(name)
        if theirs is None or theirs.type != task.type:
            raise ConfigError(
                f"model.tasks.{name}: the shards in {folder} hold no labels for it; "
                "write them with a config that has this task"
            )
        for key, value in theirs.options.items():
            if data["model"]["tasks"][name].get(key) is None:
                data["model"]["tasks"][name][key] = value
    return RunConfig.model_validate(data).check()


class ShardSamples(LazySamples):
    """The samples of one split's shard files, memory-mapped: a sample is decoded from its
    row when it is asked for."""

    def __init__(
        self,
        folder: Path,
        files: Sequence[str],
        dtypes: dict[str, torch.dtype],
        modalities: Sequence[str],
        targets: Sequence[str],
    ) -> None:
        self.folder, self.files, self.dtypes = folder, list(files), dtypes
        self.modalities, self.targets = list(modalities), list(targets)
        self.tables = [self._open(name) for name in self.files]
        self.starts = np.cumsum([0, *(t.num_rows for t in self.tables)])

    def _open(self, name: str) -> pa.Table:
        try:
            return pa.ipc.open_file(pa.memory_map(str(self.folder / name))).read_all()
        except (OSError, pa.ArrowInvalid) as error:
            raise DataError(f"{self.folder / name}: cannot read the shard: {error}") from None

    def __len__(self) -> int:
        return int(self.starts[-1])

    def sample(self, index: int) -> Sample:
        shard = int(np.searchsorted(self.starts, index, side="right")) - 1
        row = self.tables[shard].slice(index - int(self.starts[shard]), 1).to_pylist()[0]
        return Sample(
            id=row["id"],
            inputs={m: self._tensor(row, "input", "shape", m) for m in self.modalities},
            targets={t: self._tensor(row, "target", "target_shape", t) for t in self.targets},
        )

    def _tensor(self, row: dict[str, Any], values: str, shapes: str, name: str) -> Tensor | None:
        data = row[f"{values}.{name}"]
        if data is None:
            return None
        dtype = self.dtypes[f"{values}.{name}"]
        array = np.frombuffer(data, dtype=torch.empty((), dtype=dtype).numpy().dtype)
        return torch.from_numpy(array.reshape(row[f"{shapes}.{name}"]).copy())
