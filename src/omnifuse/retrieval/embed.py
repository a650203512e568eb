"""Embedding for the index: samples into an alignment task's space, and a whole collection
chunk by chunk into a `.partial` folder that a rerun reuses (a build is resumable).

A chunk file holds, for the rows of one range that read cleanly, their manifest row numbers
and each aligned modality's normalised embedding with a presence flag, and the range's bad
rows; memory is bounded by one chunk of rows, however large the collection.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from omnifuse.data.dataset import BadRow, Readers, load_samples
from omnifuse.errors import ConfigError, OmnifuseError
from omnifuse.interfaces import Sample
from omnifuse.layers.attention import masked_mean
from omnifuse.manifest import Manifest
from omnifuse.model import OmnifuseModel
from omnifuse.tasks.alignment import Alignment, aligned_task

JOB_FILE = "job.json"


def alignment_for(model: OmnifuseModel, task: str | None, modality: str) -> Alignment:
    """The alignment task (the only one with `modality`, or `task`) whose space is indexed."""
    if modality not in model.modalities:
        raise ConfigError(
            f"--modality {modality}: the model has no such modality; "
            f"it has {', '.join(sorted(model.modalities))}"
        )
    try:
        return aligned_task(
            model.task_dict(),
            task,
            where=lambda t: modality in t.between,
            what=f"alignment task with modality '{modality}'",
        )
    except OmnifuseError as error:
        raise ConfigError(str(error)) from None


def embed_width(task: Alignment) -> int:
    """The width E of the task's shared space."""
    projection = task.projections[task.between[0]]
    assert isinstance(projection, torch.nn.Linear)
    return projection.out_features


@torch.no_grad()
def embed_samples(
    model: OmnifuseModel,
    task: Alignment,
    samples: Sequence[Sample],
    *,
    batch_size: int = 256,
    readers: Readers | None = None,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """For each modality of `task`: (n, E) float32 normalised embeddings and (n,) presence
    (an absent modality's row means nothing), computed as the task embeds in training."""
    if model.training:  # eval() walks every module: 1 ms, most of a one-text query
        model.eval()
    collate = (readers or Readers.of(model.config)).collate()
    parts: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {m: [] for m in task.between}
    for start in range(0, len(samples), batch_size):
        batch = collate(list(samples[start : start + batch_size]))
        # only the aligned modalities that some sample has (a text query reads no image)
        here = [m for m in task.between if bool(batch.present[m].any())]
        tokens = model.encode(batch, only=here)
        for m in task.between:
            if m in tokens:
                vectors = task.project(m, masked_mean(tokens[m].tokens, tokens[m].mask)).cpu()
            else:
                vectors = torch.zeros(len(batch), embed_width(task))
            parts[m].append((vectors.float().numpy(), batch.present[m].numpy()))
    width = embed_width(task)
    return {
        m: (
            np.concatenate([v for v, _ in chunks]) if chunks else np.zeros((0, width), "float32"),
            np.concatenate([p for _, p in chunks]) if chunks else np.zeros(0, bool),
        )
        for m, chunks in parts.items()
    }


@dataclass(frozen=True)
class Chunk:
    """One range of rows, embedded: `rows` the manifest row numbers that read cleanly,
    `vectors[m]` (len(rows), E) and `present[m]` per aligned modality, and the bad rows."""

    rows: np.ndarray
    vectors: dict[str, np.ndarray]
    present: dict[str, np.ndarray]
    bad: list[BadRow]


def save_chunk(path: Path, chunk: Chunk) -> None:
    arrays: dict[str, Any] = {"rows": chunk.rows}
    for m in chunk.vectors:
        arrays[f"vectors/{m}"], arrays[f"present/{m}"] = chunk.vectors[m], chunk.present[m]
    bad = [{"index": b.index, "where": b.where, "problem": b.problem} for b in chunk.bad]
    arrays["bad"] = np.asarray(json.dumps(bad))
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)  # a chunk is there whole or not at all


def load_chunk(path: Path) -> Chunk:
    with np.load(path) as data:
        names = [key.split("/", 1)[1] for key in data.files if key.startswith("vectors/")]
        bad = [BadRow(**b) for b in json.loads(str(data["bad"]))]
        return Chunk(
            rows=data["rows"],
            vectors={m: data[f"vectors/{m}"] for m in names},
            present={m: data[f"present/{m}"] for m in names},
            bad=bad,
        )


class Chunks:
    """The chunk files of a collection, in row order, read one at a time."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    def __iter__(self) -> Iterator[Chunk]:
        for path in self.paths:
            yield load_chunk(path)

    def bad(self) -> list[BadRow]:
        return [b for chunk in self for b in chunk.bad]


def embed_collection(
    model: OmnifuseModel,
    task: Alignment,
    manifest: Manifest,
    partial: Path,
    *,
    job: dict[str, Any],
    chunk_rows: int,
    batch_size: int,
    progress: bool,
) -> Chunks:
    """Every row of `manifest` embedded into chunk files in `partial`. Chunks a previous run
    of the same `job` (manifest, model, task, chunk size) left there are reused."""
    key = json.dumps(job, sort_keys=True)
    job_file = partial / JOB_FILE
    if partial.exists() and (not job_file.is_file() or job_file.read_text() != key):
        shutil.rmtree(partial)  # another job's chunks: start again
    partial.mkdir(parents=True, exist_ok=True)
    job_file.write_text(key)
    readers = Readers.of(model.config)
    total = len(manifest.rows)
    paths = []
    with tqdm(total=total, desc="embedding", unit="row", disable=not progress) as bar:
        for start in range(0, total, chunk_rows):
            stop = min(start + chunk_rows, total)
            path = partial / f"chunk-{start:010d}.npz"
            paths.append(path)
            if not path.is_file():
                save_chunk(
                    path,
                    embed_range(model, task, manifest, range(start, stop), readers, batch_size),
                )
            bar.update(stop - start)
    return Chunks(paths)


def embed_range(
    model: OmnifuseModel,
    task: Alignment,
    manifest: Manifest,
    rows: range,
    readers: Readers,
    batch_size: int,
) -> Chunk:
    """One range of manifest rows loaded and embedded."""
    samples, bad = load_samples(manifest, rows, readers)
    good = sorted(set(rows) - {b.index for b in bad})
    embedded = embed_samples(model, task, samples, batch_size=batch_size, readers=readers)
    return Chunk(
        rows=np.asarray(good, dtype=np.int64),
        vectors={m: v for m, (v, _) in embedded.items()},
        present={m: p for m, (_, p) in embedded.items()},
        bad=bad,
    )
