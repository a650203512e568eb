"""Searches that arrive together run as one batch: one model call and one index lookup.

A single worker thread takes every query waiting in the queue (up to `size`), groups them by
(k, where), and searches each group at once; it never waits for more to arrive, so a lone
query is answered at once and a busy server batches by itself. Should a batch fail, each of
its queries is searched alone, so that one bad query gets its error and the others their hits.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from omnifuse.retrieval import Hit, Query

Search = Callable[[Sequence[Query], int, Mapping[str, str]], list[list[Hit]]]


@dataclass(frozen=True)
class Pending:
    query: Query
    k: int
    where: tuple[tuple[str, str], ...]
    future: Future[list[Hit]] = field(default_factory=Future)


class Batcher:
    """`search(queries, k, where)` run by one worker thread over the queries submitted."""

    def __init__(self, search: Search, *, size: int = 32) -> None:
        self.search = search
        self.size = size
        self.queue: queue.SimpleQueue[Pending | None] = queue.SimpleQueue()
        self.worker = threading.Thread(target=self.loop, name="omnifuse-search", daemon=True)
        self.worker.start()

    def submit(self, query: Query, k: int, where: Mapping[str, str]) -> list[Hit]:
        """The hits of `query`, once its batch has run (its error, if it has one)."""
        pending = Pending(query, k, tuple(sorted(where.items())))
        self.queue.put(pending)
        return pending.future.result()

    def close(self) -> None:
        self.queue.put(None)

    def loop(self) -> None:
        while (first := self.queue.get()) is not None:
            batch = [first]
            stop = False
            while len(batch) < self.size:
                try:
                    item = self.queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            groups: dict[tuple[Any, ...], list[Pending]] = {}
            for pending in batch:
                groups.setdefault((pending.k, pending.where), []).append(pending)
            for group in groups.values():
                self.answer(group)
            if stop:
                return

    def answer(self, group: list[Pending]) -> None:
        k, where = group[0].k, dict(group[0].where)
        try:
            results = self.search([p.query for p in group], k, where)
        except BaseException as error:  # handed to the request that asked
            if len(group) == 1:
                group[0].future.set_exception(error)
                return
            for pending in group:  # find whose query it was: each alone
                self.answer([pending])
            return
        for pending, hits in zip(group, results, strict=True):
            pending.future.set_result(hits)
