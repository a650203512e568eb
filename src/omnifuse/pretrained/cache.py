"""Features of a frozen backbone, cached per sample by a hash of the sample's input.

In memory, and optionally on disk as one safetensors file per sample under
`<folder>/<backbone fingerprint>/`, so that later runs on the same data skip the backbone too.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from safetensors.torch import load_file, save_file
from torch import Tensor


def content_key(sample: Tensor) -> str:
    """sha1 of a tensor's dtype, shape and bytes."""
    digest = hashlib.sha1(f"{sample.dtype}{tuple(sample.shape)}".encode())
    digest.update(sample.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class FeatureCache:
    """key -> features (tokens, F) on the CPU; `folder` adds a persistent copy on disk."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder
        self.memory: dict[str, Tensor] = {}

    def get(self, key: str) -> Tensor | None:
        if key in self.memory:
            return self.memory[key]
        if self.folder is not None:
            path = self.folder / f"{key}.safetensors"
            if path.is_file():
                self.memory[key] = load_file(str(path))["features"]
                return self.memory[key]
        return None

    def put(self, key: str, features: Tensor) -> None:
        features = features.detach().cpu().contiguous()
        self.memory[key] = features
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            # written under a temporary name, then renamed: a reader never sees half a file
            handle, temporary = tempfile.mkstemp(dir=self.folder, prefix=".", suffix=".tmp")
            os.close(handle)
            save_file({"features": features}, temporary)
            os.replace(temporary, self.folder / f"{key}.safetensors")

    def clear(self) -> None:
        """Forget the in-memory features (the backbone's weights changed)."""
        self.memory.clear()

    def __len__(self) -> int:
        return len(self.memory)
