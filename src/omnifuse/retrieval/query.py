"""Searching an index with a saved model: text or a file in any modality of its alignment
task, the k nearest rows, optionally among the rows matching `where`.

    index = open_index(Path("indexes/world"))
    model = OmnifuseModel.from_pretrained("runs/world")
    for hit in search(index, model, Query(text="a red circle"), k=5): print(hit)
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

import numpy as np

from omnifuse.data.dataset import Readers, load_samples
from omnifuse.errors import ConfigError, DataError
from omnifuse.manifest import Manifest
from omnifuse.model import OmnifuseModel
from omnifuse.retrieval import structure
from omnifuse.retrieval.embed import alignment_for, embed_samples
from omnifuse.retrieval.gap import centred
from omnifuse.retrieval.store import Index
from omnifuse.retrieval.structure import faiss

MAX_K = 1000
_readers: weakref.WeakKeyDictionary[OmnifuseModel, Readers] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class Query:
    """A text, or a file read by `modality` (default: the model's only modality reading the
    file's suffix)."""

    text: str | None = None
    file: Path | None = None
    modality: str | None = None


@dataclass(frozen=True)
class Hit:
    """One result: its rank from 1, id, score (cosine in the index's space), the indexed
    modality's file relative to the index root (or None), and the stored columns."""

    rank: int
    id: str
    score: float
    file: str | None
    metadata: dict[str, Any]


def query_modality(index: Index, model: OmnifuseModel, query: Query) -> str:
    """The modality of the index's alignment task that reads `query`."""
    task = alignment_for(model, index.meta["task"], index.modality)
    kinds = {m: model.modalities[m].config.kind for m in task.between}
    if (query.text is None) == (query.file is None):
        raise DataError("a query is a text or a file: give exactly one")
    if query.modality is not None:
        if query.modality not in kinds:
            raise ConfigError(
                f"query modality '{query.modality}': not one of task '{task.name}''s "
                f"modalities ({', '.join(task.between)})"
            )
        return query.modality
    if query.text is not None:
        wanted = [m for m, kind in kinds.items() if kind == "text"]
        what = "the query text: task"
    else:
        suffix = Path(query.file or "").suffix.lower()
        wanted = [m for m in kinds if suffix in model.modalities[m].suffixes]
        what = f"query file {query.file}: task"
    if len(wanted) != 1:
        reads = ", ".join(f"{m} ({k})" for m, k in kinds.items())
        which = (
            f"several modalities reading it ({', '.join(wanted)})"
            if wanted
            else "no modality reading it"
        )
        raise DataError(f"{what} '{task.name}' has {which}; its modalities: {reads}")
    return wanted[0]


def modality_of_kind(index: Index, model: OmnifuseModel, kind: str) -> str:
    """The modality of the index's alignment task of `kind` (the CLI's --image, --audio)."""
    task = alignment_for(model, index.meta["task"], index.modality)
    names = [m for m in task.between if model.modalities[m].config.kind == kind]
    if len(names) != 1:
        many = "several" if names else "no"
        raise ConfigError(f"task '{task.name}' has {many} {kind} modalities: {task.between}")
    return names[0]


def embed_queries(index: Index, model: OmnifuseModel, queries: Sequence[Query]) -> np.ndarray:
    """(Q, E) query vectors in the index's space, gap-corrected as its vectors are."""
    task = alignment_for(model, index.meta["task"], index.modality)
    names = [query_modality(index, model, q) for q in queries]
    rows: list[dict[str, Any]] = []
    for i, (query, name) in enumerate(zip(queries, names, strict=True)):
        modality = model.modalities[name]
        if query.text is not None:
            if not query.text.strip():
                raise DataError("the query text is empty; give some words to search for")
            rows.append({"id": f"query {i + 1}", modality.column: query.text})
        else:
            path = Path(query.file or "")
            if not path.is_file():
                raise DataError(f"query file {path}: file not found")
            rows.append({"id": str(path), modality.column: modality.cell(path)})
    manifest = Manifest(Path.cwd() / "query", rows)
    if model not in _readers:
        _readers[model] = Readers.of(model.config)
    samples, bad = load_samples(manifest, range(len(rows)), _readers[model])
    if bad:
        raise DataError(f"query {bad[0].index + 1}: {bad[0].problem}")
    embedded = embed_samples(model, task, samples, readers=_readers[model])
    vectors = np.stack([embedded[name][0][i] for i, name in enumerate(names)])
    centroids = index.meta["centroids"] if index.meta["gap_correction"] else {}
    out = np.empty_like(vectors)
    for name in set(names):
        picked = np.asarray([n == name for n in names])
        centroid = centroids.get(name)
        out[picked] = centred(vectors[picked], None if centroid is None else np.asarray(centroid))
    return out


def nearest(
    index: Index, vectors: np.ndarray, k: int, rows: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(Q, k) scores and row positions (-1 where fewer than k) of the nearest rows, among
    `rows` (positions) if given: a small set exactly, a large one through the index with an
    id selector (scanning wider by the share filtered out); k of half the index or more is
    an exact scan, since a graph search need not reach every node."""
    tombstones = np.asarray(index.meta.get("tombstones", []), dtype=np.int64)
    if rows is not None and (len(rows) <= index.config.filter_exact_below or index.kind == "exact"):
        return structure.exact_top_k(index.vectors, vectors, k, rows)
    if rows is None and index.kind != "exact" and 2 * k >= index.size:  # most of it: scan all
        return structure.exact_top_k(index.vectors, vectors, k)
    keep: list[Any] = []  # the selectors must outlive the search
    selector: Any = None
    if rows is not None:
        keep.append(np.ascontiguousarray(index.slots[rows]))
        selector = faiss.IDSelectorBatch(len(keep[0]), faiss.swig_ptr(keep[0]))
    elif len(tombstones):
        keep.append(tombstones)
        inner = faiss.IDSelectorBatch(len(tombstones), faiss.swig_ptr(tombstones))
        keep.append(inner)
        selector = faiss.IDSelectorNot(inner)
    params = dict(index.meta["params"])
    if rows is not None:  # scan wider by the share filtered out, so as many matches are seen
        wider = index.size / max(1, len(rows))
        for key, most in (("nprobe", params.get("nlist", 1)), ("ef_search", index.size)):
            if key in params:
                params[key] = int(min(most, np.ceil(params[key] * wider)))
    params = structure.parameters(index.faiss, params, selector)
    scores, slots = index.faiss.search(np.ascontiguousarray(vectors), k, params=params)
    return scores, index.positions(slots)


@overload
def search(
    index: Index, model: OmnifuseModel, query: Query, k: int = 10,
    where: Mapping[str, str] | None = None,
) -> list[Hit]: ...  # fmt: skip


@overload
def search(
    index: Index, model: OmnifuseModel, query: Sequence[Query], k: int = 10,
    where: Mapping[str, str] | None = None,
) -> list[list[Hit]]: ...  # fmt: skip


def search(
    index: Index,
    model: OmnifuseModel,
    query: Query | Sequence[Query],
    k: int = 10,
    where: Mapping[str, str] | None = None,
) -> list[Hit] | list[list[Hit]]:
    """The `k` nearest rows of `index` to `query` (a list of hits), or to each of a sequence
    of queries (one list per query, embedded and searched as one batch), among the rows whose
    stored columns equal `where`'s values."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise ConfigError(f"k={k}: give a number of results from 1 to {MAX_K}")
    index.check_loaded(model)
    queries = [query] if isinstance(query, Query) else list(query)
    if not queries:
        return []
    rows = index.matching(where) if where else None
    vectors = embed_queries(index, model, queries)
    scores, positions = nearest(index, vectors, k, rows)
    hits = [hits_of(index, s, p) for s, p in zip(scores, positions, strict=True)]
    return hits[0] if isinstance(query, Query) else hits


def hits_of(index: Index, scores: np.ndarray, positions: np.ndarray) -> list[Hit]:
    """The hits of one query: metadata looked up by position."""
    found = positions >= 0
    scores, positions = scores[found], positions[found]
    table = index.rows.take(positions).select(index.columns).to_pylist()
    files = index.rows.column("file").take(positions).to_pylist()
    return [
        Hit(rank=r + 1, id=str(index.ids[p]), score=float(s), file=f, metadata=m)
        for r, (s, p, f, m) in enumerate(zip(scores, positions, files, table, strict=True))
    ]
