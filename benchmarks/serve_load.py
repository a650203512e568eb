"""`/search` under load: p50/p99 latency and requests/s, text and image queries apart.

    python benchmarks/serve_load.py [--requests 2000] [--concurrency 16] [--threads 1]
    python benchmarks/serve_load.py --model runs/world/model --index world-index --data M

Without --model/--index it generates a world (--n samples), trains the small image-text
model of tests/conftest.py's `aligned_model` on it for --epochs, and indexes its images. The
server is `omnifuse serve` in its own process on 127.0.0.1 (a free port); the load comes from
one httpx.AsyncClient with --concurrency requests in flight, each query drawn in turn from
the world's captions or its images. Three phases: text only, image only, then both mixed.

`load` is also what tests/serve/test_serve_load.py runs against a server in a thread.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np


@dataclass(frozen=True)
class Request:
    """One query of the load: a text (GET /search?q=) or an image file (POST /search)."""

    kind: str  # text or image
    text: str | None = None
    name: str | None = None
    data: bytes | None = None


async def send(client: httpx.AsyncClient, request: Request, k: int) -> httpx.Response:
    if request.kind == "text":
        return await client.get("/search", params={"q": request.text, "k": k})
    files = {"file": (request.name, request.data, "image/png")}
    return await client.post("/search", files=files, data={"k": str(k)})


async def run_load(
    url: str,
    requests: Sequence[Request],
    total: int,
    *,
    concurrency: int = 16,
    k: int = 10,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """`total` requests, `concurrency` at a time, cycling through `requests`; the latencies
    per kind and every failure (a status other than 200, or a transport error)."""
    latencies: dict[str, list[float]] = {}
    errors: list[str] = []
    issued = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=url, headers=headers, limits=limits, timeout=60.0
    ) as client:

        async def worker() -> None:
            nonlocal issued
            while issued < total:
                request = requests[issued % len(requests)]
                issued += 1
                start = time.perf_counter()
                try:
                    response = await send(client, request, k)
                    if response.status_code != 200 or len(response.json()["hits"]) != k:
                        errors.append(f"{response.status_code}: {response.text[:200]}")
                except httpx.HTTPError as error:
                    errors.append(f"{type(error).__name__}: {error}")
                latencies.setdefault(request.kind, []).append(time.perf_counter() - start)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    return summary(latencies, errors, seconds)


def summary(latencies: dict[str, list[float]], errors: list[str], seconds: float) -> dict:
    every = [t for times in latencies.values() for t in times]
    result: dict[str, Any] = {
        "requests": len(every),
        "errors": len(errors),
        "first_errors": errors[:3],
        "seconds": round(seconds, 3),
        "requests_per_s": round(len(every) / seconds, 1),
    }
    for kind, times in sorted({"all": every, **latencies}.items()):
        ms = 1000 * np.array(times)
        result[kind] = {
            "n": len(times),
            "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2),
        }
    return result


def load(url: str, requests: Sequence[Request], total: int, **options: Any) -> dict[str, Any]:
    """`run_load` from synchronous code."""
    return asyncio.run(run_load(url, requests, total, **options))


def world_requests(manifest: Path, count: int = 64) -> list[Request]:
    """Text queries from the world's captions and image queries from its image files,
    alternating."""
    import pyarrow.parquet as pq

    rows = pq.read_table(manifest, columns=["image", "caption"]).to_pylist()
    rows = [row for row in rows if row["image"] and row["caption"]][:count]
    texts = [Request("text", text=row["caption"]) for row in rows]
    images = [
        Request(
            "image",
            name=Path(row["image"]).name,
            data=(manifest.parent / row["image"]).read_bytes(),
        )
        for row in rows
    ]
    return [r for pair in zip(texts, images, strict=True) for r in pair]


def prepare(folder: Path, n: int, epochs: int) -> tuple[Path, Path, Path]:
    """A world of n samples, the small aligned model trained on it, and its image index."""
    from omnifuse.config import RunConfig
    from omnifuse.data.world import generate_world
    from omnifuse.retrieval import build_index
    from omnifuse.train.run import run

    manifest = generate_world(folder / "world", n=n, seed=0)
    config = {
        "data": {"manifest": str(manifest)},
        "modalities": {
            "image": {"kind": "image", "size": 32, "encoder": {"type": "image_conv", "width": 8}},
            "text": {
                "kind": "text",
                "column": "caption",
                "max_length": 64,
                "encoder": {"type": "text_transformer", "depth": 1},
            },
        },
        "model": {
            "dim": 16,
            "fusion": {"type": "late"},
            "tasks": {
                "retrieval": {"type": "alignment", "between": ["image", "text"], "embed_dim": 16},
                "scene": {"type": "classification", "target": "scene_class"},
            },
        },
        "train": {"epochs": epochs, "batch_size": 64, "lr": 3e-3, "seed": 0},
    }
    model = folder / "model"
    run(RunConfig.model_validate(config).check(), model, checkpoints=False, progress=False)
    index = folder / "index"
    build_index(model, manifest, "image", index, columns=("caption", "scene_class"), progress=False)
    return manifest, model, index


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(model: Path, index: Path, threads: int) -> tuple[subprocess.Popen, str]:
    """`omnifuse serve` in its own process; returns it and its URL once /health answers."""
    port = free_port()
    command = [sys.executable, "-m", "omnifuse", "serve", str(model), "--index", str(index)]
    command += ["--port", str(port), "--threads", str(threads)]
    paths = [str(Path(__file__).resolve().parents[1] / "src"), os.environ.get("PYTHONPATH")]
    env = os.environ | {"PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    process = subprocess.Popen(command, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"omnifuse serve exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("omnifuse serve did not answer /health within 120 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--index", type=Path)
    parser.add_argument("--data", type=Path, help="A world manifest to draw queries from.")
    parser.add_argument("--n", type=int, default=2000, help="Samples of the generated world.")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--requests", type=int, default=2000, help="Requests per phase.")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="The server's torch threads.")
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        if args.model and args.index and args.data:
            manifest, model, index = args.data, args.model, args.index
        else:
            started = time.perf_counter()
            manifest, model, index = prepare(Path(scratch), args.n, args.epochs)
            print(
                f"prepared a {args.n}-sample world, model and index in "
                f"{time.perf_counter() - started:.1f} s",
                file=sys.stderr,
            )
        queries = world_requests(manifest)
        process, url = start_server(model, index, args.threads)
        try:
            load(url, queries, 64, concurrency=args.concurrency, k=args.k)  # warm up
            results = {}
            for phase in ("text", "image", "mixed"):
                chosen = [q for q in queries if phase in ("mixed", q.kind)]
                results[phase] = load(
                    url, chosen, args.requests, concurrency=args.concurrency, k=args.k
                )
                print(f"{phase}: {json.dumps(results[phase])}")
        finally:
            process.terminate()
            process.wait(10)
    info = {"cpus": os.cpu_count(), "threads": args.threads, "concurrency": args.concurrency}
    print(json.dumps({"setup": info | {"requests_per_phase": args.requests}, **results}))


if __name__ == "__main__":
    main()
