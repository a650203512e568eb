"""A plain training loop you can call as a function: AdamW, warm-up then cosine, clipping.

history = fit(model, train_samples, TrainConfig(epochs=5), collate=collate)
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from omnifuse.config import TrainConfig
from omnifuse.data.batch import Collate, Sample
from omnifuse.errors import OmnifuseError
from omnifuse.model import OmnifuseModel


@dataclass
class History:
    """Per-step training losses and per-epoch validation metrics."""

    steps: list[dict[str, float]] = field(default_factory=list)
    epochs: list[dict[str, float]] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def warmup_cosine(total: int, warmup: int) -> Callable[[int], float]:
    """Learning-rate factor: linear warm-up over `warmup` steps, then cosine decay to 0."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def make_loader(
    samples: Sequence[Sample], collate: Collate, batch_size: int, *, shuffle: bool, seed: int = 0
) -> DataLoader[Sample]:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        list(samples),  # type: ignore[arg-type]  # a list is a map-style dataset
        batch_size=batch_size,
        shuffle=shuffle,
        collate_fn=collate,
        generator=generator,
        drop_last=shuffle and len(samples) > batch_size,  # equal-sized contrastive batches
    )


def fit(
    model: OmnifuseModel,
    train: Sequence[Sample],
    config: TrainConfig,
    *,
    collate: Collate,
    validate: Callable[[OmnifuseModel], dict[str, float]] | None = None,
    progress: bool = True,
    desc: str = "training",
) -> History:
    """Train `model` in place; `validate` (if given) is called after each epoch."""
    seed_everything(config.seed)
    loader = make_loader(train, collate, config.batch_size, shuffle=True, seed=config.seed)
    total = config.epochs * len(loader)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "position" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 or "position" in n]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=config.lr,
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(total, round(total * config.warmup_fraction))
    )
    history = History()
    bar = tqdm(total=total, desc=desc, disable=not progress, unit="step", leave=False)
    for epoch in range(config.epochs):
        model.train()
        for batch in loader:
            losses = model.training_forward(batch)
            if not torch.isfinite(losses["loss"]):
                raise OmnifuseError(
                    f"training diverged at epoch {epoch + 1}, step {len(history.steps) + 1}: "
                    f"loss is {losses['loss'].item()}; try a lower train.lr"
                )
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            schedule.step()
            record = {k: v.item() for k, v in losses.items()}
            lr = float(schedule.get_last_lr()[0])
            history.steps.append({"epoch": epoch + 1, "lr": lr, **record})
            bar.set_postfix(loss=f"{record['loss']:.3f}")
            bar.update()
        if validate is not None:
            history.epochs.append({"epoch": epoch + 1, **validate(model)})
    bar.close()
    return history
