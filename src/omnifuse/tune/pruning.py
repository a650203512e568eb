"""Stopping poor trials early: each epoch's validation metric is reported to the trial's
pruner, which may stop the run there (`fit`'s `stop`).

    stop = EpochPruning(trial, "scene/accuracy", epochs=12)
    run_prepared(prepared, folder, stop=stop)       # stop.pruned: whether it was stopped

Successive halving (Jamieson and Talwalkar 2016, as ASHA: Li et al. 2020) promotes a trial
past each rung (min_epochs, then x3, x9, ... epochs) only if its value there is among the best
third of the trials that reached the rung; Hyperband runs several such brackets with different
first rungs. Until three trials have reached a rung, a trial must beat all of them there. The
first rung is half the epochs by default: a metric a model learns late (the world's
`synergy`, an XOR of two modalities) is at chance for every trial in the first epochs, and a
search of AV-MNIST that could prune from the first of six epochs completed 3 of its 24 trials.
"""

from __future__ import annotations

import optuna

from omnifuse.errors import ConfigError
from omnifuse.train.loop import History

PRUNERS = ("halving", "hyperband", "none")


def make_pruner(
    name: str, *, epochs: int, min_epochs: int | None = None
) -> optuna.pruners.BasePruner:
    """The pruner `name` for trials of `epochs` epochs that may be stopped from `min_epochs`
    (default: half of them, at least 1)."""
    first = max(1, epochs // 2) if min_epochs is None else min_epochs
    if not 1 <= first <= epochs:
        raise ConfigError(f"tune --min-epochs: expected 1 to {epochs} (train.epochs), got {first}")
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=first, reduction_factor=3)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=first, max_resource=epochs, reduction_factor=3
        )
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"tune --pruner: unknown pruner '{name}'; known: {', '.join(PRUNERS)}")


class EpochPruning:
    """`fit`'s `stop`: reports the validation metric `key` of each epoch to `trial` (step =
    the epoch) and stops training when its pruner says so, except after the last epoch of
    `epochs`, which the search scores as a finished trial."""

    def __init__(self, trial: optuna.Trial, key: str, *, epochs: int) -> None:
        self.trial = trial
        self.key = key
        self.epochs = epochs
        self.pruned = False
        self.last: float | None = None  # the metric of the last epoch trained

    def __call__(self, history: History) -> bool:
        record = history.epochs[-1]
        if self.key not in record:
            raise ConfigError(
                f"tune: the validation metrics have no {self.key}; they have "
                f"{', '.join(k for k in record if k != 'epoch')}"
            )
        self.last = float(record[self.key])
        epoch = int(record["epoch"])
        self.trial.report(self.last, epoch)
        if epoch >= self.epochs:
            return False
        self.pruned = self.trial.should_prune()
        return self.pruned
