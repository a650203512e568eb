"""Building an index from a manifest, and updating it in place (add rows, remove ids).

    index = build_index(Path("runs/world"), Path("world/world.parquet"), "image",
                        Path("indexes/world"), columns=["scene_class"])

A build embeds the collection chunk by chunk into `OUT/.partial` (a rerun reuses the chunks
written), measures the modality gap on its pairs, writes the stored vectors block by block
and then the FAISS index, as the first version of the index. Updates write a new version
and swap the pointer (store.py), under the index's lock.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from omnifuse.data.dataset import BadRow, BadRowsError
from omnifuse.errors import DataError
from omnifuse.manifest import Manifest, read_manifest
from omnifuse.model import OmnifuseModel
from omnifuse.registry import closest
from omnifuse.retrieval import structure
from omnifuse.retrieval.config import IndexConfig
from omnifuse.retrieval.embed import Chunks, alignment_for, embed_collection, embed_width
from omnifuse.retrieval.gap import centred, keep_correction, measure_gap
from omnifuse.retrieval.rows import Collected, collect, metadata
from omnifuse.retrieval.store import (
    POINTER,
    VECTORS_FILE,
    Index,
    commit_version,
    file_fingerprint,
    loaded_fingerprint,
    new_version,
    open_index,
    updating,
    write_version,
)
from omnifuse.tasks.alignment import Alignment
from omnifuse.train.run import SKIPPED_FILE, write_skipped

PARTIAL = ".partial"


def check_columns(manifest: Manifest, columns: Sequence[str]) -> None:
    for column in columns:
        if column not in manifest.columns:
            raise DataError(
                f"{manifest.path.name}: no column '{column}'"
                f"{closest(column, manifest.columns)} to store"
            )


def embed_manifest(
    model: OmnifuseModel,
    task: Alignment,
    manifest: Manifest,
    partial: Path,
    config: IndexConfig,
    *,
    job: dict[str, Any],
    skip_bad: bool,
    progress: bool,
) -> tuple[Chunks, list[BadRow]]:
    """The manifest's chunks; its bad rows refused (BadRowsError) unless `skip_bad`. The
    chunks stay in `partial` either way, so a rerun with --skip-bad embeds nothing again."""
    stat = manifest.path.stat()
    job = job | {
        "manifest": str(manifest.path.resolve()),
        "bytes": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "chunk_rows": config.chunk_rows,
    }
    chunks = embed_collection(
        model,
        task,
        manifest,
        partial,
        job=job,
        chunk_rows=config.chunk_rows,
        batch_size=config.batch_size,
        progress=progress,
    )
    bad = chunks.bad()
    if bad and not skip_bad:
        raise BadRowsError(manifest, bad)
    return chunks, bad


def build_index(
    model_dir: Path,
    data: Path,
    modality: str,
    out: Path,
    *,
    columns: Sequence[str] = (),
    config: IndexConfig | None = None,
    task: str | None = None,
    skip_bad: bool = False,
    progress: bool = True,
) -> Index:
    """Embed every row of the manifest `data` having `modality` with the model in
    `model_dir` and write an index of them to `out`, storing `columns` of each row."""
    config = config or IndexConfig()
    out = Path(out)
    if (out / POINTER).exists():
        raise DataError(
            f"{out}: already an index; update it with `omnifuse index add/remove`, "
            "or build into another folder"
        )
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: a file, not a folder; choose another --out")
    model = OmnifuseModel.from_pretrained(model_dir)
    alignment = alignment_for(model, task, modality)
    manifest = read_manifest(data)
    check_columns(manifest, columns)
    fingerprint = file_fingerprint(model_dir)
    with updating(out):
        job = {"model": fingerprint, "task": alignment.name}
        chunks, bad = embed_manifest(
            model, alignment, manifest, out / PARTIAL, config,
            job=job, skip_bad=skip_bad, progress=progress,
        )  # fmt: skip
        found = collect(chunks, modality, alignment.between, config)
        if len(found.positions) == 0:
            raise DataError(f"{manifest.path.name}: no row has a readable {modality} to index")
        gaps = {
            m: measure_gap(found.pairs_indexed[m], found.pairs_other[m],
                           found.centroids[modality], found.centroids[m])
            for m in found.pairs_other if len(found.pairs_other[m]) >= 2
        }  # fmt: skip
        correct = {"on": True, "off": False, "auto": keep_correction(gaps)}[config.gap_correction]
        rows = metadata(manifest, found.positions, columns, model.modalities[modality])
        meta = {
            "kind": config.kind_for(len(found.positions)),
            "modality": modality,
            "task": alignment.name,
            "aligned": list(alignment.between),
            "columns": list(columns),
            "dim": embed_width(alignment),
            "root": str(manifest.root.resolve()),
            "manifest": manifest.path.name,
            "model": {
                "dir": str(Path(model_dir).resolve()),
                "files_sha256": fingerprint,
                "weights_sha256": loaded_fingerprint(model),
            },
            "config": config.model_dump(mode="json"),
            "gap_correction": correct,
            "centroids": {m: c.tolist() for m, c in found.centroids.items()},
            "gap": gaps,
            "built": datetime.now(UTC).isoformat(timespec="seconds"),
            "skipped_rows": len(bad),
            "missing": found.missing,
            "tombstones": [],
        }
        write_new(out, meta, chunks, found, rows, correct, bad)
        shutil.rmtree(out / PARTIAL, ignore_errors=True)
    return open_index(out)


def write_new(
    out: Path,
    meta: dict[str, Any],
    chunks: Chunks,
    found: Collected,
    rows: pa.Table,
    correct: bool,
    bad: list[BadRow],
) -> None:
    """The first version: stored vectors block by block, the FAISS index over them, the
    approximate index's recall against exact search."""
    modality, size = meta["modality"], len(found.positions)
    name, tmp = new_version(out)
    centroids = {m: np.asarray(c, np.float32) for m, c in meta["centroids"].items()}
    centre = centroids[modality] if correct else None
    vectors = np.lib.format.open_memmap(
        tmp / VECTORS_FILE, mode="w+", dtype=np.float32, shape=(size, meta["dim"])
    )
    written = 0
    for chunk in chunks:
        keep = chunk.present[modality]
        block = centred(chunk.vectors[modality][keep], centre)
        vectors[written : written + len(block)] = block
        written += len(block)
    vectors.flush()
    config = IndexConfig.model_validate(meta["config"])
    index, params = structure.make(meta["kind"], meta["dim"], size, config)
    structure.train(index, vectors, config, config.seed)
    slots = np.arange(size, dtype=np.int64)
    structure.fill(index, vectors, slots)
    queries = {
        m: centred(q, centroids[m] if correct else None) for m, q in found.pairs_other.items()
    }
    meta["params"] = params
    meta["recall"] = measure_recall(index, params, vectors, queries, found, config)
    meta["next_slot"] = size
    meta["size"] = size
    write_skipped(bad, tmp / SKIPPED_FILE)
    write_version(tmp, meta, index, rows.add_column(0, "_slot", pa.array(slots)))
    del vectors
    commit_version(out, name, tmp)


def measure_recall(
    index: Any,
    params: dict[str, Any],
    vectors: np.ndarray,
    queries: dict[str, np.ndarray],
    found: Collected,
    config: IndexConfig,
) -> dict[str, Any]:
    """Cross-modal recall@10 of each other modality's queries (its pairs) over the whole
    collection, exact and through the index, and the index's recall@10 against exact."""
    measured: dict[str, Any] = {}
    for m, q in queries.items():
        q = q[: config.recall_queries]
        if not len(q):
            continue
        truth = found.pairs_position[m][: len(q)]
        _, exact = structure.exact_top_k(vectors, q, 10)
        _, approx = index.search(q, 10, params=structure.parameters(index, params))
        overlap = [
            len(set(a) & set(e) - {-1}) / min(10, len(vectors))
            for a, e in zip(approx, exact, strict=True)
        ]
        measured[m] = {
            "queries": len(q),
            "cross_modal_at_10_exact": float((exact == truth[:, None]).any(1).mean()),
            "cross_modal_at_10": float((approx == truth[:, None]).any(1).mean()),
            "approximate_vs_exact_at_10": float(np.mean(overlap)),
        }
    return measured
