"""How hard is each reading of AV-MNIST's "75% of the PCA energy removed" for the image alone?

Fits the PCA on MNIST training images 0-54999 (as `omnifuse data avmnist` on the full task),
then trains the same small CNN (2 conv layers, 4 epochs, Adam) on the first `--train` images
and scores it on the first `--test` test images, for:

- `residual`: the leading components carrying 75% of the variance projected out, the residual
  kept (the build's first reading);
- `keep-K`: only the K leading components kept (`omnifuse.data.avmnist.fit_energy_removal`
  keeps the fewest that hold 25%: K = 4).

    .venv/bin/python benchmarks/avmnist_energy.py --mnist ../shared/data/mnist
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

from omnifuse.data.avmnist import EnergyRemoval, fit_energy_removal, load_mnist


def accuracy(train: np.ndarray, labels: np.ndarray, test: np.ndarray, truth: np.ndarray) -> float:
    """Test accuracy of a small CNN trained on `train` (n, 28, 28), inputs standardised."""
    torch.manual_seed(0)
    mean, std = train.mean(), train.std() + 1e-8
    x = torch.tensor((train - mean) / std, dtype=torch.float32)[:, None]
    y = torch.tensor(labels, dtype=torch.long)
    net = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 49, 128), nn.ReLU(), nn.Linear(128, 10),
    )  # fmt: skip
    optimizer = torch.optim.Adam(net.parameters(), 1e-3)
    for _ in range(4):
        for rows in torch.randperm(len(x)).split(128):
            loss = nn.functional.cross_entropy(net(x[rows]), y[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        predicted = net(torch.tensor((test - mean) / std, dtype=torch.float32)[:, None]).argmax(1)
    return float((predicted.numpy() == truth).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mnist", default="../shared/data/mnist")
    parser.add_argument("--train", type=int, default=10000)
    parser.add_argument("--test", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    mnist = load_mnist(args.mnist)
    fitted_on = mnist.train_images[:55000]
    train, labels = mnist.train_images[: args.train], mnist.train_labels[: args.train]
    test, truth = mnist.test_images[: args.test], mnist.test_labels[: args.test]

    full = fit_energy_removal(fitted_on, 0.0)  # every component, in order
    leading = fit_energy_removal(fitted_on, 0.25)  # the leading 75% of the variance

    def residual(images: np.ndarray) -> np.ndarray:
        return images - EnergyRemoval(full.mean, leading.components, 0.0).apply(images)

    readings = {f"residual ({len(leading.components)} removed)": residual}
    for k in (3, 4, 5):
        kept = EnergyRemoval(full.mean, full.components[:k], 0.0)
        readings[f"keep-{k}"] = kept.apply
    default = fit_energy_removal(fitted_on)
    print(f"default: keeps {len(default.components)} components, removes {default.removed:.3f}")
    for name, transform in readings.items():
        started = time.perf_counter()
        score = accuracy(transform(train), labels, transform(test), truth)
        print(f"{name:>24}: accuracy {score:.3f} ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
