"""Index scale: build time, peak RSS, query latency (one query at a time and batched) and
recall@10 against exact search, at 10k, 100k and 1M random unit vectors.

Vectors are uniform on the sphere (the hardest case: no structure, every point nearly as far
as any other), or with --clusters C drawn around C random centres, with spread --spread
(embeddings of real collections cluster by what they show). Queries are database vectors
plus gaussian noise of norm about --noise, renormalised (a query near an item of the
collection). Searches run on one thread (torch and FAISS set to 1); the
exact ground truth is computed with FAISS's flat index on --truth-threads threads.

    python benchmarks/index_scale.py --dim 16 --sizes 10000,100000,1000000
    python benchmarks/index_scale.py --dim 64 --clusters 10000 --spread 0.5
"""

from __future__ import annotations

import argparse
import resource
import time

import faiss
import numpy as np
import torch

from omnifuse.retrieval import IndexConfig, structure


def unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def vectors(rng: np.random.Generator, n: int, args: argparse.Namespace) -> np.ndarray:
    """n unit vectors: uniform, or around `args.clusters` centres (noise of norm ~spread)."""
    if not args.clusters:
        return unit(rng, n, args.dim)
    centres = unit(rng, args.clusters, args.dim)
    x = centres[rng.integers(0, args.clusters, n)]
    x += rng.standard_normal((n, args.dim), dtype=np.float32) * (args.spread / args.dim**0.5)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def latencies(index, params, queries: np.ndarray, k: int) -> np.ndarray:
    times = []
    for q in queries:
        start = time.perf_counter()
        index.search(q[None], k, params=params)
        times.append(time.perf_counter() - start)
    return np.asarray(times) * 1e3


def measure(kind: str, n: int, args: argparse.Namespace, data, queries, truth) -> dict:
    config = IndexConfig(kind=kind, nprobe=args.nprobe, ef_search=args.ef_search,
                         hnsw_m=args.hnsw_m)  # fmt: skip
    start = time.perf_counter()
    index, params = structure.make(kind, args.dim, n, config)
    structure.train(index, data, config, seed=0)
    structure.fill(index, data, np.arange(n, dtype=np.int64))
    build = time.perf_counter() - start
    search = structure.parameters(index, params)
    one = latencies(index, search, queries[: args.single], 10)
    start = time.perf_counter()
    _, found = index.search(queries, 10, params=search)
    batched = (time.perf_counter() - start) * 1e3 / len(queries)
    recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)])
    return {
        "kind": kind, "n": n, "params": params, "build_s": round(build, 1),
        "p50_ms": round(float(np.percentile(one, 50)), 3),
        "p99_ms": round(float(np.percentile(one, 99)), 3),
        "batched_ms_per_query": round(batched, 3), "recall_at_10": round(float(recall), 4),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--kinds", default="exact,ivf")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--single", type=int, default=500, help="queries timed one at a time")
    parser.add_argument("--noise", type=float, default=0.5)
    parser.add_argument("--clusters", type=int, default=0, help="0: uniform vectors")
    parser.add_argument("--spread", type=float, default=0.5)
    parser.add_argument("--nprobe", type=int, default=128)
    parser.add_argument("--ef-search", type=int, default=128)
    parser.add_argument("--hnsw-m", type=int, default=128)
    parser.add_argument("--truth-threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    shape = f"{args.clusters} clusters, spread {args.spread}" if args.clusters else "uniform"
    print(f"dim {args.dim}, {shape}, {args.queries} queries (an item + noise {args.noise})")
    for n in [int(s) for s in args.sizes.split(",")]:
        data = vectors(rng, n, args)
        noise = rng.standard_normal((args.queries, args.dim), dtype=np.float32)
        queries = data[rng.integers(0, n, args.queries)] + noise * args.noise / args.dim**0.5
        queries = np.ascontiguousarray(queries / np.linalg.norm(queries, axis=1, keepdims=True))
        faiss.omp_set_num_threads(args.truth_threads)
        flat = faiss.IndexFlatIP(args.dim)
        flat.add(data)
        _, truth = flat.search(queries, 10)
        del flat
        faiss.omp_set_num_threads(1)
        for kind in args.kinds.split(","):
            print(measure(kind, n, args, data, queries, truth), flush=True)


if __name__ == "__main__":
    main()
