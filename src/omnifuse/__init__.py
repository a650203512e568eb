"""omnifuse: general-purpose multimodal learning.

Importing the package registers its built-in modality kinds, encoders, fusion strategies,
tasks and datasets; installed plugins register theirs when a registry is first read.
"""

import importlib.metadata

__version__ = importlib.metadata.version("omnifuse")

# the built-ins register themselves as their modules are imported
from omnifuse import data, fusion, modalities, pretrained, tasks

__all__ = ["__version__", "data", "fusion", "modalities", "pretrained", "tasks"]
