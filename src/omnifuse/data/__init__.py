"""The data pipeline (manifest rows -> fitted statistics -> samples -> batches) and the
built-in datasets, registered as their modules are imported."""

from omnifuse.data import avmnist, world

__all__ = ["avmnist", "world"]
