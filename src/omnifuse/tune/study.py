"""A search's Optuna study, kept in its output folder so that a killed search resumes.

    with Search.open(out, signature, pruner=pruner) as search:
        search.run(objective, budget=1800, trials=None)

OUT/study.journal is Optuna's journal storage (one JSON line per change, appended), so every
finished trial survives a kill. OUT/search.json holds what the search is (its base config,
space and task: a folder is resumed only by the same search) and the wall-clock seconds it has
spent, rewritten every few seconds while it runs, so that a budget counts across resumes. One
process at a time works in a folder (an flock on OUT/tune.lock, released by the kernel when
the process dies). A trial a kill interrupted is left RUNNING in the journal: on resuming it
is marked failed (listed in the study's `killed`), its partial folder removed and its choices
enqueued again, so it is redone once, as a new trial; finished trials never run again.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from omnifuse.errors import OmnifuseError

SEARCH_FILE = "search.json"
JOURNAL_FILE = "study.journal"
LOCK_FILE = "tune.lock"
TRIALS_DIR = "trials"
STUDY_NAME = "omnifuse-tune"
HEARTBEAT_SECONDS = 5.0
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
log = logging.getLogger(__name__)


def parse_duration(text: str) -> float:
    """Seconds from `90s`, `30m`, `2h`, `1h30m` or a plain number of seconds."""
    cleaned = text.strip().lower()
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([smhd])", cleaned)
    if re.fullmatch(r"\d+(?:\.\d+)?", cleaned):
        seconds = float(cleaned)
    elif parts and re.fullmatch(r"(\s*\d+(?:\.\d+)?\s*[smhd])+", cleaned):
        seconds = sum(float(n) * UNITS[unit] for n, unit in parts)
    else:
        raise OmnifuseError(
            f"tune --budget: cannot read '{text}'; expected a duration such as 90s, 30m, 2h"
        )
    if seconds <= 0:
        raise OmnifuseError(f"tune --budget: must be more than 0, got '{text}'")
    return seconds


def trial_dir(out: Path, number: int) -> Path:
    """The run directory of trial `number`."""
    return out / TRIALS_DIR / f"{number:04d}"


@dataclass
class Outcome:
    """What one trial gave: the validation metric (of the last epoch trained), whether the
    pruner stopped it, and its record (what `omnifuse tune` writes about it)."""

    value: float
    pruned: bool = False
    record: dict[str, Any] = field(default_factory=dict)


# an objective trains and scores one trial, given its Optuna trial and its choices
Objective = Callable[[optuna.Trial, dict[str, Any]], Outcome]


def done(trial: FrozenTrial) -> bool:
    """Whether a trial ran to an outcome: completed, pruned, or failed with an error (not
    interrupted by a kill, which leaves no error). These are what `--trials` counts."""
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and "error" in trial.user_attrs


class Search:
    """One search's study, folder and clock; made by `Search.open`."""

    def __init__(self, out: Path, study: optuna.Study, signature: dict[str, Any], spent: float):
        self.out = out
        self.study = study
        self.signature = signature
        self.spent_before = spent  # seconds spent by earlier sessions
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._lock = threading.Lock()

    @classmethod
    @contextmanager
    def open(
        cls,
        out: Path,
        signature: dict[str, Any],
        *,
        sampler: optuna.samplers.BaseSampler | None = None,
        pruner: optuna.pruners.BasePruner | None = None,
        seed: int = 0,
    ) -> Iterator[Search]:
        """The search in `out` (a new one, or the one to resume there, which must have the same
        `signature`), locked for this process and with its clock running until closed."""
        signature = json.loads(json.dumps(signature))  # as saved: tuples become lists
        out.mkdir(parents=True, exist_ok=True)
        with _locked(out / LOCK_FILE):
            spent = _check_signature(out, signature)
            storage = JournalStorage(JournalFileBackend(str(out / JOURNAL_FILE)))
            optuna.logging.set_verbosity(optuna.logging.WARNING)
            study = optuna.create_study(
                storage=storage,
                study_name=STUDY_NAME,
                direction="maximize",
                load_if_exists=True,
                pruner=pruner or optuna.pruners.NopPruner(),
            )
            # TPE after 5 random trials, seeded by `seed` and the trials so far: a resumed
            # search draws new choices rather than those its first session began with
            study.sampler = sampler or optuna.samplers.TPESampler(
                seed=seed + 1_000 * len(study.trials), n_startup_trials=5
            )
            search = cls(out, study, signature, spent)
            search._recover()
            search._save()
            beat = threading.Thread(target=search._heartbeat, daemon=True)
            beat.start()
            try:
                yield search
            finally:
                search._stop.set()
                beat.join()
                search._save()

    def elapsed(self) -> float:
        """Wall-clock seconds this search has spent, over every session."""
        return self.spent_before + time.monotonic() - self.started

    def trials(self) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False)

    def finished(self) -> list[FrozenTrial]:
        return [t for t in self.trials() if done(t)]

    def enqueue(self, choices: list[dict[str, Any]]) -> None:
        """Trials to run first (partial choices; the sampler draws the rest), once: not
        again when the search resumes."""
        if self.study.user_attrs.get("enqueued"):
            return
        for params in choices:
            self.study.enqueue_trial(params)
        self.study.set_user_attr("enqueued", True)

    def run(
        self,
        objective: Objective,
        suggest: Callable[[optuna.Trial], dict[str, Any]],
        *,
        budget: float | None,
        trials: int | None,
        after: Callable[[FrozenTrial], None] | None = None,
    ) -> str:
        """Run trials until `trials` are done or `budget` seconds are spent (counted over
        every session; the trial running when it runs out finishes); `after` is called with
        each trial once it is told. Returns why it stopped: 'trials' or 'budget'."""
        if budget is None and trials is None:
            raise OmnifuseError("tune: give --budget, --trials or both")
        while True:
            if trials is not None and len(self.finished()) >= trials:
                return "trials"
            if budget is not None and self.elapsed() >= budget:
                return "budget"
            trial = self.study.ask()
            frozen = self._one(trial, objective, suggest)
            if after is not None:
                after(frozen)

    def _one(
        self,
        trial: optuna.Trial,
        objective: Objective,
        suggest: Callable[[optuna.Trial], dict[str, Any]],
    ) -> FrozenTrial:
        """Run and tell one trial. A project error (a config the space made that does not
        build, training that diverges) fails the trial, and the search goes on; anything else
        stops the search with the trial left RUNNING, to be redone on resuming."""
        started = time.monotonic()
        try:
            params = suggest(trial)
            outcome = objective(trial, params)
        except OmnifuseError as error:
            trial.set_user_attr("error", str(error))
            trial.set_user_attr("seconds", round(time.monotonic() - started, 2))
            self.study.tell(trial, state=TrialState.FAIL)
            log.warning("trial %d failed: %s", trial.number, error)
        else:
            trial.set_user_attr("record", outcome.record)
            if outcome.pruned:
                self.study.tell(trial, state=TrialState.PRUNED)
            else:
                self.study.tell(trial, outcome.value)
        self._save()
        return self.study.get_trials(deepcopy=False)[trial.number]

    def _recover(self) -> None:
        """Trials a kill left RUNNING: marked failed (without an error: not `done`), listed in
        the study's `killed`, their partial run folders removed, and their choices enqueued
        to run again."""
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            killed = self.study.user_attrs.get("killed", [])
            self.study.set_user_attr("killed", [*killed, trial.number])
            self.study.tell(trial.number, state=TrialState.FAIL)
            shutil.rmtree(trial_dir(self.out, trial.number), ignore_errors=True)
            # its choices, or those it was enqueued with when killed before drawing any
            choices = trial.params or trial.system_attrs.get("fixed_params")
            if choices:
                self.study.enqueue_trial(choices)
            log.warning("trial %d was interrupted; it will run again", trial.number)

    def _save(self) -> None:
        """search.json with the seconds spent so far, replaced atomically."""
        with self._lock:
            path = self.out / SEARCH_FILE
            partial = path.with_name(f"{SEARCH_FILE}.partial")
            content = {"signature": self.signature, "seconds": round(self.elapsed(), 1)}
            partial.write_text(json.dumps(content, indent=2) + "\n")
            os.replace(partial, path)

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            self._save()


def _check_signature(out: Path, signature: dict[str, Any]) -> float:
    """The seconds already spent by the search in `out`; an error when `out` holds another
    search, or other files that are not a search's."""
    path = out / SEARCH_FILE
    if not path.is_file():
        if (out / JOURNAL_FILE).exists():
            raise OmnifuseError(
                f"{out}: a study journal without {SEARCH_FILE}; choose another --out"
            )
        ours = (LOCK_FILE, f"{SEARCH_FILE}.partial")  # a first session killed as it began
        unknown = sorted(p.name for p in out.iterdir() if p.name not in ours)
        if unknown:
            raise OmnifuseError(
                f"{out}: not empty and not a search ({unknown[0]} is there); choose another --out"
            )
        return 0.0
    try:
        saved = json.loads(path.read_text())
        previous, spent = saved["signature"], float(saved["seconds"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        raise OmnifuseError(f"{path}: damaged; choose another --out") from None
    if previous != signature:
        where = _first_difference(previous, signature)
        raise OmnifuseError(
            f"{out} holds a different search (its {where} differs); resume it with the same "
            "config, task and space, or choose another --out"
        )
    return spent


def _first_difference(a: Any, b: Any, path: str = "") -> str:
    """The dotted path of the first place two JSON values differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                return _first_difference(a.get(key), b.get(key), f"{path}.{key}" if path else key)
    return path or "content"


@contextmanager
def _locked(path: Path) -> Iterator[IO[str]]:
    """An exclusive lock on `path` for this process, or an error naming the folder."""
    handle = path.open("a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise OmnifuseError(
            f"{path.parent}: another omnifuse tune is working in this folder"
        ) from None
    try:
        yield handle
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()
