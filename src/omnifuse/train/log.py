"""Live training logs: CSV files and TensorBoard event files, consistent across resumes.

A resumed run re-does the steps after its last checkpoint; the first record it logs cuts
both logs back to before that step, so no step appears twice.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path
from typing import Any

STEPS_FILE = "steps.csv"
EPOCHS_FILE = "epochs.csv"
TENSORBOARD_DIR = "tensorboard"


class RunLog:
    """`step(record)` after every optimiser step, `epoch(record)` after every validation."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.writer: Any = None  # a tensorboardX SummaryWriter, opened at the first record
        self.step_number = 0

    def _open(self, first_step: int) -> None:
        from tensorboardX import SummaryWriter

        for name in (STEPS_FILE, EPOCHS_FILE):
            _truncate_csv(self.out / name, first_step)
        if first_step <= 1:  # a fresh run: earlier event files would mix with this one's
            shutil.rmtree(self.out / TENSORBOARD_DIR, ignore_errors=True)
        self.writer = SummaryWriter(str(self.out / TENSORBOARD_DIR), purge_step=first_step)

    def step(self, record: dict[str, float]) -> None:
        self.step_number = int(record["step"])
        if self.writer is None:
            self._open(self.step_number)
        _append_csv(self.out / STEPS_FILE, record)
        for key, value in record.items():
            if key not in ("step", "epoch"):
                self.writer.add_scalar(f"train/{key}", value, self.step_number)

    def epoch(self, record: dict[str, float]) -> None:
        record = {"step": self.step_number, **record}
        _append_csv(self.out / EPOCHS_FILE, record)
        for key, value in record.items():
            if key not in ("step", "epoch"):
                self.writer.add_scalar(f"val/{key}", value, self.step_number)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _append_csv(path: Path, record: dict[str, float]) -> None:
    new = not path.exists()
    with path.open("a", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(record))
        if new:
            writer.writeheader()
        writer.writerow(record)


def _truncate_csv(path: Path, first_step: int) -> None:
    """Keep only the rows logged before `first_step`."""
    if not path.exists():
        return
    with path.open(newline="") as file:
        rows = list(csv.DictReader(file))
    kept = [r for r in rows if int(float(r["step"])) < first_step]
    if not kept:
        path.unlink()
        return
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(kept[0]))
        writer.writeheader()
        writer.writerows(kept)
