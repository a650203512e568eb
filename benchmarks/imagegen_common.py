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


class SceneCNN(nn.Module):
    """A scene parser for 64x64 images: a stride-2 stem, three batch-normalised conv stages,
    features pooled to a 2 x 8 grid (so they keep where along x an object is: the slots are
    ordered left to right), a 128-d feature layer, one linear head per attribute."""

    def __init__(self, *, channels: int, size: int, classes: Sequence[int]) -> None:
        super().__init__()

        def stage(i: int, o: int) -> list[nn.Module]:
            return [nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU()]

        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 4, 2, 1), nn.BatchNorm2d(32), nn.ReLU(),
            *stage(32, 32), nn.MaxPool2d(2), *stage(32, 64), nn.MaxPool2d(2), *stage(64, 64),
            nn.AdaptiveAvgPool2d((2, 8)), nn.Flatten(), nn.Linear(64 * 16, 128), nn.ReLU(),
        )  # fmt: skip
        self.heads = nn.ModuleList(nn.Linear(128, c) for c in classes)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> list[Tensor]:
        h = self.body(x)
        return [head(h) for head in self.heads]


def fit_classifier(
    images: Tensor,
    labels: Tensor,
    classes: Sequence[int],
    *,
    epochs: int,
    seed: int = 0,
    build: type[nn.Module] = SmallCNN,
    one_cycle: bool = False,
) -> Any:
    """A `build` (SmallCNN or SceneCNN) trained on images (N, C, S, S) in [0, 1] and labels
    (N, heads), -1 where a head has no label for an image; AdamW at 2e-3, or on a one-cycle
    schedule peaking at 3e-3."""
    torch.manual_seed(seed)
    model = build(channels=images.shape[1], size=images.shape[-1], classes=classes)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    steps = epochs * -(-len(images) // 64)
    schedule = (
        torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps)
        if one_cycle
        else None
    )
    for _ in range(epochs):
        model.train()
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
            if schedule is not None:
                schedule.step()
    return model.eval()


@torch.no_grad()
def classify(model: Any, images: Tensor) -> tuple[list[Tensor], Tensor]:
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
