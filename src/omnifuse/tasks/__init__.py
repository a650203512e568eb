"""Tasks: a head, its loss and its metrics, registered by type."""

from omnifuse.tasks import alignment, classification, generation, reconstruction, regression
from omnifuse.tasks.base import Task

__all__ = [
    "Task",
    "alignment",
    "classification",
    "generation",
    "reconstruction",
    "regression",
]
