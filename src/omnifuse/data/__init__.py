"""Batches, manifests, loading, and the built-in datasets."""

from pathlib import Path

from omnifuse.registry import register_dataset


@register_dataset("world", version=2)
def world_dataset(
    out: Path, progress: bool = False, *, n: int = 3000, seed: int = 0, missing: float = 0.05
) -> Path:
    """The generated multimodal world (docs/world.md)."""
    from omnifuse.data.world import generate_world

    return generate_world(out, n=n, seed=seed, missing=missing, progress=progress)


@register_dataset("avmnist", version=2)
def avmnist_dataset(
    out: Path,
    progress: bool = False,
    *,
    mnist: str,
    fsdd: str,
    seed: int = 0,
    snr_db: float = -10.0,
    energy_removed: float = 0.75,
    train_size: int | None = None,
    val_size: int | None = None,
    test_size: int | None = None,
) -> Path:
    """AV-MNIST from MNIST IDX files and FSDD recordings (docs/avmnist.md). Relative source
    folders are read from the working directory."""
    from omnifuse.data.avmnist import build_avmnist

    return build_avmnist(
        out,
        mnist=mnist,
        fsdd=fsdd,
        seed=seed,
        snr_db=snr_db,
        energy_removed=energy_removed,
        train_size=train_size,
        val_size=val_size,
        test_size=test_size,
        progress=progress,
    )
