"""Cross-modal search: an index of a collection embedded in an alignment task's space,
built, updated in place and searched with text or files of any aligned modality.

    from omnifuse.retrieval import Query, build_index, open_index, search
    index = build_index(Path("runs/world"), Path("world/world.parquet"), "image",
                        Path("indexes/world"), columns=["scene_class"])
    hits = search(index, model, Query(text="a red circle"), k=5)
"""

from omnifuse.retrieval.build import build_index
from omnifuse.retrieval.config import IndexConfig, parse_settings
from omnifuse.retrieval.query import Hit, Query, search
from omnifuse.retrieval.store import Index, open_index
from omnifuse.retrieval.update import add_to_index, remove_from_index

__all__ = [
    "Hit",
    "Index",
    "IndexConfig",
    "Query",
    "add_to_index",
    "build_index",
    "open_index",
    "parse_settings",
    "remove_from_index",
    "search",
]
