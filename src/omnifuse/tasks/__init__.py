"""Tasks: a head, its loss and its metrics, registered by type."""

from omnifuse.tasks import alignment, classification, reconstruction, regression
from omnifuse.tasks.base import Task

__all__ = ["Task", "alignment", "classification", "reconstruction", "regression"]
