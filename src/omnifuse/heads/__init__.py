"""Output layers shared by tasks."""

from omnifuse.heads.query import QueryHead

__all__ = ["QueryHead"]
