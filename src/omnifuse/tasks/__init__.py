"""Tasks: a head, its loss and its metrics, registered by type."""

from omnifuse.tasks import (
    alignment,
    classification,
    generation,
    image_generation,
    image_tokenizer,
    reconstruction,
    regression,
)
from omnifuse.tasks.base import Task

__all__ = [
    "Task",
    "alignment",
    "classification",
    "generation",
    "image_generation",
    "image_tokenizer",
    "reconstruction",
    "regression",
]
