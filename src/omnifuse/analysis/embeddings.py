"""Per-modality embeddings of samples: each modality's encoder tokens, mean-pooled over the
valid ones, as the model computes them (`OmnifuseModel.encode`), and the class labels of a
classification task.

    vectors = embed(model, samples, collate, modalities=["image"])
    vectors["image"].vectors        # (N, D) float32; rows of absent samples are zero
    labels = class_labels(samples, "synergy")   # (N,) class index, -1 where unlabelled
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from omnifuse.data.dataset import batches
from omnifuse.interfaces import Collate, Sample
from omnifuse.layers.attention import masked_mean
from omnifuse.model import OmnifuseModel


@dataclass(frozen=True)
class Embedding:
    """One modality's pooled encoder output per sample, and which samples have it."""

    vectors: np.ndarray  # (N, D) float32
    present: np.ndarray  # (N,) bool


@torch.no_grad()
def embed(
    model: OmnifuseModel,
    samples: Sequence[Sample],
    collate: Collate,
    *,
    modalities: Sequence[str] | None = None,
    batch_size: int = 256,
) -> dict[str, Embedding]:
    """modality -> its Embedding over `samples`, for the model's modalities (or `modalities`,
    which the model must have)."""
    model.eval()
    names = sorted(model.encoders if modalities is None else modalities)
    vectors: dict[str, list[np.ndarray]] = {name: [] for name in names}
    present: dict[str, list[np.ndarray]] = {name: [] for name in names}
    n = len(samples)
    chunks = [range(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
    for batch in batches(samples, chunks, collate):
        with model.precision():
            tokens = model.encode(batch, only=names)
        for name, t in tokens.items():
            vectors[name].append(masked_mean(t.tokens, t.mask).float().cpu().numpy())
            present[name].append(batch.present[name].cpu().numpy())
    if not n:
        empty = np.zeros((0, model.config.model.dim), np.float32)
        return {name: Embedding(empty, np.zeros(0, bool)) for name in names}
    return {
        name: Embedding(np.concatenate(vectors[name]), np.concatenate(present[name]))
        for name in names
    }


def class_labels(samples: Sequence[Sample], task: str) -> np.ndarray:
    """(N,) the class index of classification task `task` per sample, -1 where unlabelled."""
    labels = np.full(len(samples), -1, dtype=np.int64)
    for i in range(len(samples)):
        target = samples[i].targets.get(task)
        if target is not None:
            labels[i] = int(target)
    return labels
