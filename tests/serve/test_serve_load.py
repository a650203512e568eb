"""A bounded load against a real uvicorn on 127.0.0.1 (`omnifuse serve` in its own process, as
benchmarks/serve_load.py runs it): text and image queries mixed, 16 in flight, every one
answered."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import httpx

from benchmarks.serve_load import load, start_server, world_requests
from omnifuse.serve import create_app
from omnifuse.serve.background import serving

REQUESTS = 1600  # about 9 s on 2 quiet cores, plus about 4 s for the server to start


def test_many_mixed_searches_without_an_error(aligned_model, image_index, collection):
    queries = world_requests(collection)
    process, url = start_server(aligned_model, image_index, threads=1)
    try:
        result = load(url, queries, REQUESTS, concurrency=16, k=5)
    finally:
        process.terminate()
        process.wait(10)
    print(json.dumps(result))  # p50/p99 per kind, shown with pytest -s
    assert result["errors"] == 0, result["first_errors"]
    assert result["requests"] == REQUESTS
    assert result["text"]["n"] == result["image"]["n"] == REQUESTS // 2


def test_load_counts_failures(aligned_model, image_index, collection):
    queries = world_requests(Path(collection), count=2)
    with serving(create_app(aligned_model, image_index)) as url:
        result = load(url, queries, 8, concurrency=4, k=500)  # k over the limit: all 422
    assert result["errors"] == 8 and result["first_errors"][0].startswith("422")


def test_a_request_waiting_for_the_model_does_not_hold_up_the_others(aligned_model, image_index):
    app = create_app(aligned_model, image_index)
    service = app.state.service
    with serving(app) as url:
        with service.lock:  # the model busy: searches wait, the event loop does not
            search = {"params": {"q": "a circle"}, "timeout": 30}
            waiting = [
                threading.Thread(target=httpx.get, args=(f"{url}/search",), kwargs=search)
                for _ in range(4)
            ]
            for thread in waiting:
                thread.start()
            assert httpx.get(f"{url}/health", timeout=5).status_code == 200
            assert httpx.get(f"{url}/info", timeout=5).status_code == 200
            assert all(thread.is_alive() for thread in waiting)
        for thread in waiting:
            thread.join(10)
        assert not any(thread.is_alive() for thread in waiting)
