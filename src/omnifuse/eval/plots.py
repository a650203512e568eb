"""Pictures written beside the metrics: training curves and confusion matrices."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from torch import Tensor


def plot_training(
    step_logs: Sequence[Mapping[str, float]], epoch_logs: Sequence[Mapping[str, float]], path: Path
) -> None:
    """Loss per step (total and per task), then one panel of validation metrics per task, from
    a training history's per-step and per-epoch records."""
    tasks = sorted({key.split("/")[0] for e in epoch_logs for key in e if "/" in key})
    fig, axes = plt.subplots(
        1, 1 + len(tasks), figsize=(4.2 * (1 + len(tasks)), 3.6), squeeze=False
    )
    loss_ax = axes[0, 0]
    steps = range(1, len(step_logs) + 1)
    for key in sorted(step_logs[0]) if step_logs else []:
        if key.startswith("loss"):
            loss_ax.plot(steps, [s[key] for s in step_logs], label=key, lw=1)
    loss_ax.set(xlabel="step", ylabel="loss", title="training loss", yscale="log")
    loss_ax.legend(fontsize=7)
    epochs = [e["epoch"] for e in epoch_logs]
    for ax, task in zip(axes[0, 1:], tasks, strict=True):
        for key in sorted(k for k in epoch_logs[0] if k.startswith(f"{task}/")):
            ax.plot(epochs, [e[key] for e in epoch_logs], marker="o", ms=3, label=key.split("/")[1])
        ax.set(xlabel="epoch", title=f"{task} (validation)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(matrix: Tensor, classes: Sequence[str], title: str, path: Path) -> None:
    """A row-normalised confusion matrix with counts in the cells."""
    counts = matrix.double()
    rates = counts / counts.sum(1, keepdim=True).clamp(min=1)
    size = max(4.0, 0.45 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(classes)), classes, fontsize=7)
    for i in range(len(classes)):
        for j in range(len(classes)):
            if counts[i, j]:
                colour = "white" if rates[i, j] > 0.5 else "black"
                ax.text(
                    j, i, str(int(counts[i, j])), ha="center", va="center", fontsize=6, color=colour
                )
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
