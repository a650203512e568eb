"""What the image generation benchmarks share: a small CNN classifier (trained on real
images, then reading generated ones), a Fréchet distance on its features, and the training of
a config through the library's own prepare/train."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from omnifuse.config import parse_config
from omnifuse.train.run import Prepared, prepare, train


class SmallCNN(nn.Module):
    """Two conv stages and a 64-d feature layer, then one linear head per attribute."""

    def __init__(self, *, channels: int, size: int, classes: Sequence[int]) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
            nn.Flatten(), nn.Linear(64 * 16, 64), nn.ReLU(),
        )  # fmt: skip
        self.heads = nn.ModuleList(nn.Linear(64, c) for c in classes)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> list[Tensor]:
        h = self.body(x)
        return [head(h) for head in self.heads]


def fit_classifier(
    images: Tensor, labels: Tensor, classes: Sequence[int], *, epochs: int, seed: int = 0
) -> SmallCNN:
    """A SmallCNN trained on images (N, C, S, S) in [0, 1] and labels (N, heads), -1 where
    a head has no label for an image."""
    torch.manual_seed(seed)
    model = SmallCNN(channels=images.shape[1], size=images.shape[-1], classes=classes)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    for _ in range(epochs):
        order = torch.randperm(len(images))
        for k in range(0, len(images), 64):
            rows = order[k : k + 64]
            outputs = model(images[rows])
            loss = sum(
                F.cross_entropy(out, labels[rows, i], ignore_index=-1)
                for i, out in enumerate(outputs)
            )
            optimizer.zero_grad()
            loss.backward()  # type: ignore[union-attr]
            optimizer.step()
    return model.eval()


@torch.no_grad()
def classify(model: SmallCNN, images: Tensor) -> tuple[list[Tensor], Tensor]:
    """The predicted class per head (each (N,)) and the 64-d features (N, 64)."""
    predictions: list[list[Tensor]] = [[] for _ in model.heads]
    features = []
    for k in range(0, len(images), 256):
        h = model.features(images[k : k + 256])
        features.append(h)
        for i, head in enumerate(model.heads):
            predictions[i].append(head(h).argmax(-1))
    return [torch.cat(p) for p in predictions], torch.cat(features)


def accuracy(predicted: Tensor, labels: Tensor) -> float:
    """The share of labelled entries (label >= 0) predicted right."""
    keep = labels >= 0
    return (predicted[keep] == labels[keep]).float().mean().item()


def frechet_distance(a: Tensor, b: Tensor) -> float:
    """The Fréchet distance between Gaussians fitted to features a (N, d) and b (M, d), as in
    FID (Heusel et al. 2017), here on the small classifier's features, not Inception's."""
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)

    def sqrtm(m: Tensor) -> Tensor:
        values, vectors = torch.linalg.eigh(m)
        return vectors @ torch.diag(values.clamp(min=0).sqrt()) @ vectors.T

    root = sqrtm(cov_a)
    middle = sqrtm(root @ cov_b @ root)
    return ((mu_a - mu_b).pow(2).sum() + torch.trace(cov_a + cov_b - 2 * middle)).item()


def train_config(config: dict[str, Any], label: str) -> tuple[Prepared, Any, float]:
    """Prepare and train `config` through the library; (prepared, trained model, seconds)."""
    start = time.perf_counter()
    prepared = prepare(parse_config(config, label), progress=False)
    trained = train(prepared, progress=False)
    seconds = time.perf_counter() - start
    print(f"{label}: trained in {seconds:.0f} s; {trained.metrics}", flush=True)
    return prepared, trained, seconds


def save(trained: Any, out: Path) -> Path:
    trained.model.save_pretrained(out)
    return out
