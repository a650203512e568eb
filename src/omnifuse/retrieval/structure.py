"""The FAISS structures an index can hold, made, trained, filled and searched in one place.

exact: IndexIDMap2 over IndexFlatIP, every vector scored. ivf: IndexIVFFlat (inner product)
over a flat coarse quantizer, `nprobe` of its `nlist` lists scanned. hnsw: IndexIDMap2 over
IndexHNSWFlat (`hnsw_m` links per node, `ef_search` candidates); FAISS cannot remove from a
graph, so a removed row is a tombstone the search excludes, and the graph is rebuilt from the
stored vectors when tombstones pass a quarter of it. The FAISS ids are the rows' slots.
"""

from __future__ import annotations

from typing import Any

import faiss as _faiss
import numpy as np

from omnifuse.retrieval.config import IndexConfig

faiss: Any = _faiss  # its bundled type stubs lag the library (SearchParameters*)
BLOCK = 65536  # vectors added or scanned at a time


def make(kind: str, dim: int, size: int, config: IndexConfig) -> tuple[Any, dict[str, Any]]:
    """An empty FAISS index of `kind` for `size` vectors, and its parameters."""
    if kind == "exact":
        return faiss.IndexIDMap2(faiss.IndexFlatIP(dim)), {}
    if kind == "hnsw":
        graph = faiss.IndexHNSWFlat(dim, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = config.ef_construction
        params = {"hnsw_m": config.hnsw_m, "ef_construction": config.ef_construction}
        return faiss.IndexIDMap2(graph), params | {"ef_search": config.ef_search}
    nlist = config.lists_for(size)
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    index.own_fields = True
    quantizer.this.disown()
    return index, {"nlist": nlist, "nprobe": config.nprobe}


def train(index: Any, vectors: np.ndarray, config: IndexConfig, seed: int) -> None:
    """Train an IVF index's coarse quantizer on a seeded sample of `vectors` (others need
    no training)."""
    if index.is_trained:
        return
    wanted = min(len(vectors), config.train_points * index.nlist)
    chosen = np.sort(np.random.default_rng(seed).choice(len(vectors), wanted, replace=False))
    index.train(np.ascontiguousarray(vectors[chosen], dtype=np.float32))


def fill(index: Any, vectors: np.ndarray, slots: np.ndarray) -> None:
    """Add `vectors` (read block by block, e.g. from a memory map) with ids `slots`."""
    for start in range(0, len(vectors), BLOCK):
        block = np.ascontiguousarray(vectors[start : start + BLOCK], dtype=np.float32)
        index.add_with_ids(block, np.ascontiguousarray(slots[start : start + BLOCK]))


def parameters(index: Any, params: dict[str, Any], selector: Any = None) -> Any:
    """FAISS search parameters for this index: nprobe or efSearch, and the id selector."""
    if "nprobe" in params:
        return faiss.SearchParametersIVF(sel=selector, nprobe=int(params["nprobe"]))
    if "ef_search" in params:
        return faiss.SearchParametersHNSW(sel=selector, efSearch=int(params["ef_search"]))
    return faiss.SearchParameters(sel=selector) if selector is not None else None


def exact_top_k(
    vectors: np.ndarray, queries: np.ndarray, k: int, rows: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(Q, k) scores and row positions of the exact top k of `queries` among `vectors` (or
    among its `rows`), scanned block by block; missing places are -inf and -1."""
    candidates = np.arange(len(vectors)) if rows is None else np.asarray(rows)
    best_scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_rows = np.zeros((len(queries), 0), dtype=np.int64)
    for start in range(0, len(candidates), BLOCK):
        block = candidates[start : start + BLOCK]
        sub = vectors[block] if rows is not None else vectors[start : start + len(block)]
        scores = np.concatenate([best_scores, queries @ np.asarray(sub, np.float32).T], axis=1)
        places = np.concatenate([best_rows, np.broadcast_to(block, (len(queries), len(block)))], 1)
        keep = min(k, scores.shape[1])
        part = np.argpartition(-scores, keep - 1, axis=1)[:, :keep]
        best_scores = np.take_along_axis(scores, part, 1)
        best_rows = np.take_along_axis(places, part, 1)
    order = np.argsort(-best_scores, axis=1, kind="stable")
    best_scores = np.take_along_axis(best_scores, order, 1)
    best_rows = np.take_along_axis(best_rows, order, 1)
    missing = k - best_scores.shape[1]
    if missing > 0:
        best_scores = np.pad(best_scores, ((0, 0), (0, missing)), constant_values=-np.inf)
        best_rows = np.pad(best_rows, ((0, 0), (0, missing)), constant_values=-1)
    return best_scores, best_rows
