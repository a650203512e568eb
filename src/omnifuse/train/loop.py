"""A plain training loop you can call as a function: AdamW, warm-up then cosine, clipping.

history = fit(model, train_samples, TrainConfig(epochs=5), collate=collate)
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from omnifuse.config import TrainConfig
from omnifuse.data.dataset import batches
from omnifuse.errors import OmnifuseError
from omnifuse.interfaces import Batch, Collate, Sample
from omnifuse.model import OmnifuseModel
from omnifuse.train import distributed
from omnifuse.train.checkpoint import load_checkpoint, save_checkpoint
from omnifuse.train.log import RunLog


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


def epoch_order(size: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled sample order of one epoch: a function of (seed, epoch) alone, so that a
    resumed run sees the same batches as an uninterrupted one. A tensor (8 bytes a sample,
    not a list's 36)."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(size, generator=generator)


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases, norms and position tables."""
    trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay = [p for n, p in trained if p.ndim >= 2 and "position" not in n]
    no_decay = [p for n, p in trained if p.ndim < 2 or "position" in n]
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=config.lr,
    )


def fit(
    model: OmnifuseModel,
    train: Sequence[Sample],
    config: TrainConfig,
    *,
    collate: Collate,
    workers: int = 0,
    validate: Callable[[OmnifuseModel], dict[str, float]] | None = None,
    checkpoints: Path | None = None,
    resume: bool = False,
    log: RunLog | None = None,
    progress: bool = True,
    desc: str = "training",
    stop: Callable[[History], bool] | None = None,
) -> History:
    """Train `model` in place; `validate` (if given) is called after each epoch. Batches are
    read by `workers` processes (0: this one), which never change what a batch holds.

    `stop` (if given) is asked after each epoch's validation and checkpoint; True ends
    training there (a search's pruner stopping a poor trial); every rank must answer alike.

    With `checkpoints`, the full training state is saved there every
    `config.checkpoint_every` steps and at each epoch's end; `resume` continues from it
    exactly. `log` receives every step's and epoch's record.
    """
    seed_everything(config.seed)
    batch_size = min(config.batch_size, len(train))
    per_epoch = len(train) // batch_size  # the incomplete last batch is dropped
    total = config.epochs * per_epoch
    step_losses = distributed.engine(model, config.strategy)  # before the optimizer: FSDP
    optimizer = make_optimizer(model, config)  # replaces the parameters it shards
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(total, round(total * config.warmup_fraction))
    )
    history, step = History(), 0
    if resume:
        step, history = _resume(checkpoints, model=model, optimizer=optimizer, schedule=schedule)

    def save() -> None:
        if checkpoints is not None:  # every rank: a sharded model is gathered; rank 0 writes
            save_checkpoint(
                checkpoints,
                model=model,
                optimizer=optimizer,
                schedule=schedule,
                step=step,
                history=asdict(history),
            )

    bar = tqdm(total=total, initial=step, desc=desc, disable=not progress, unit="step", leave=False)
    pin = model.device.type == "cuda"
    reader = _reader(train, collate, workers, batch_size, per_epoch, config, step, pin)
    for epoch in range(step // per_epoch, config.epochs):
        model.train()
        for index in range(step - epoch * per_epoch, per_epoch):
            start = time.perf_counter()
            batch = next(reader)
            losses = step_losses(batch)
            reported = distributed.mean(losses)  # the global batch's, the same on every rank
            _update(
                model, losses["loss"], reported["loss"], optimizer, schedule, config, epoch, step
            )
            step += 1
            rate = len(batch) / (time.perf_counter() - start)
            lr = float(schedule.get_last_lr()[0])
            _record(history, log, bar, reported, step=step, epoch=epoch + 1, lr=lr, rate=rate)
            at_epoch_end = index == per_epoch - 1
            if config.checkpoint_every and step % config.checkpoint_every == 0 and not at_epoch_end:
                save()
        if validate is not None:
            history.epochs.append({"epoch": epoch + 1, **validate(model)})
            if log is not None:
                log.epoch(history.epochs[-1])
        save()  # after validation, so that a resumed run does not validate this epoch again
        if stop is not None and stop(history):
            break
    bar.close()
    if log is not None:
        log.close()
    return history


def _record(
    history: History,
    log: RunLog | None,
    bar: tqdm,
    reported: dict[str, torch.Tensor],
    *,
    step: int,
    epoch: int,
    lr: float,
    rate: float,
) -> None:
    """A step's losses into the history, the log and the progress bar."""
    record = {k: v.item() for k, v in reported.items()}
    history.steps.append({"step": step, "epoch": epoch, "lr": lr, **record})
    if log is not None:
        log.step(history.steps[-1])
    bar.set_postfix(loss=f"{record['loss']:.3f}", samples_per_s=f"{rate:.0f}")
    bar.update()


def _reader(
    train: Sequence[Sample],
    collate: Collate,
    workers: int,
    batch_size: int,
    per_epoch: int,
    config: TrainConfig,
    step: int,
    pin: bool,
) -> Iterator[Batch]:
    """Every batch from `step` to the end of training (under torch.distributed, this rank's
    share of each), through one reader: its worker processes start once and read ahead across
    epochs, while the order stays a function of (seed, epoch) and the step resumed at."""

    def shares() -> Iterator[Sequence[int]]:
        for epoch in range(step // per_epoch, config.epochs):
            order = epoch_order(len(train), config.seed, epoch)
            first = max(0, step - epoch * per_epoch)  # mid-epoch when resuming
            for index in range(first, per_epoch):
                chunk = order[index * batch_size : (index + 1) * batch_size].tolist()
                yield distributed.share(chunk, batch_size)

    return batches(train, shares(), collate, workers=workers, pin=pin)


def _resume(
    checkpoints: Path | None,
    *,
    model: OmnifuseModel,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
) -> tuple[int, History]:
    """The step and history saved in `checkpoints`; the model, optimizer, schedule and random
    generators are restored from it in place."""
    if checkpoints is None:
        raise OmnifuseError("resuming needs a checkpoint folder")
    step, saved = load_checkpoint(checkpoints, model=model, optimizer=optimizer, schedule=schedule)
    return step, History(**saved)


def _update(
    model: OmnifuseModel,
    loss: torch.Tensor,
    reported: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    config: TrainConfig,
    epoch: int,
    step: int,
) -> None:
    """One optimisation step from a batch's loss: backward, clipping, AdamW, the schedule
    and the model's own after-step work. A non-finite loss (`reported`: the global batch's,
    which every rank sees alike) stops training before it reaches the weights; `epoch` and
    `step` (both from 0) say where."""
    if not torch.isfinite(reported):
        raise OmnifuseError(
            f"training diverged at epoch {epoch + 1}, step {step + 1}: "
            f"loss is {reported.item()}; try a lower train.lr"
        )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
    optimizer.step()
    schedule.step()
    model.after_step()
