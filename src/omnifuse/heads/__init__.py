"""Output layers shared by tasks: the Perceiver IO query decoder and per-task query heads."""

from omnifuse.heads.query import QueryDecoder, QueryHead

__all__ = ["QueryDecoder", "QueryHead"]
