"""Batches, manifests, loading, and the built-in datasets."""

from pathlib import Path

from omnifuse.registry import register_dataset


@register_dataset("world")
def world_dataset(
    out: Path, progress: bool = False, *, n: int = 3000, seed: int = 0, missing: float = 0.05
) -> Path:
    """The generated multimodal world (docs/world.md)."""
    from omnifuse.data.world import generate_world

    return generate_world(out, n=n, seed=seed, missing=missing, progress=progress)
