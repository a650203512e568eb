"""Run a whole config: load and fit the data, train, evaluate, write the model and reports.

metrics = run(load_config("world.yaml"), Path("runs/world"))
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omnifuse import ranks
from omnifuse.config import RunConfig
from omnifuse.data.dataset import (
    BadRow,
    BadRowsError,
    Readers,
    SampleSet,
    fit_config,
    label_notes,
    load_samples,
    read_splits,
    reuse_fitted,
    subsample,
)
from omnifuse.data.shards import open_shards, read_features
from omnifuse.errors import DataError, OmnifuseError
from omnifuse.eval.evaluate import evaluate, predict
from omnifuse.eval.plots import plot_confusion, plot_training
from omnifuse.eval.report import (
    generation_examples,
    modality_ablation,
    plot_retrieval_examples,
    write_report,
)
from omnifuse.interfaces import Collate
from omnifuse.manifest import Manifest
from omnifuse.metrics import confusion_matrix
from omnifuse.modalities.base import is_missing
from omnifuse.model import CONFIG_FILE, OmnifuseModel, saved_config
from omnifuse.tasks.alignment import Alignment
from omnifuse.tasks.classification import Classification
from omnifuse.train import distributed
from omnifuse.train.checkpoint import CHECKPOINT_FILE
from omnifuse.train.log import RunLog
from omnifuse.train.loop import History, fit, seed_everything

METRICS_FILE = "metrics.json"
SKIPPED_FILE = "skipped_rows.jsonl"
logger = logging.getLogger(__name__)


@dataclass
class Prepared:
    """A fitted config and its preprocessed samples per split, with the manifest rows they
    came from (for reports that show the original files)."""

    config: RunConfig
    splits: dict[str, SampleSet]
    collate: Collate
    manifest: Manifest
    rows: dict[str, list[int]]
    notes: dict[str, dict[str, Any]] = field(default_factory=dict)  # modality -> loading notes
    labels: dict[str, dict[str, Any]] = field(default_factory=dict)  # task -> rows unlabelled
    skipped: list[BadRow] = field(default_factory=list)  # rows left out with skip_bad
    # modality -> its stored backbone features (shards written with --features): a model
    # trained on these samples must read them (`data.shards.read_features`), as `train` does
    features: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def evaluation(self) -> str:
        """The split that final metrics are reported on: test, or val when there is no test."""
        return "test" if self.splits["test"] else "val"


@dataclass
class Trained:
    model: OmnifuseModel
    history: History
    metrics: dict[str, dict[str, float]]
    train_seconds: float
    # how it ran: torch threads per process, processes, data workers per process
    compute: dict[str, int | str] = field(default_factory=dict)


def prepare(config: RunConfig, *, skip_bad: bool = False, progress: bool = True) -> Prepared:
    """Read the manifest, fit statistics on the training split, preprocess every split.

    A row that cannot be used stops everything with a BadRowsError naming it, unless
    `skip_bad`: then it is left out and listed in `Prepared.skipped`.
    """
    if config.data.shards is not None:
        return _from_shards(config)
    manifest, indices = read_splits(config)
    if config.train.init is not None:
        config = reuse_fitted(config, saved_config(config.train.init))
    config = fit_config(config, manifest, indices["train"])
    # statistics and class lists come from the whole training split; training uses the fraction
    indices["train"] = subsample(indices["train"], config.data.train_fraction, config.train.seed)
    readers = Readers.of(config)
    stream = config.data.stream  # check every row now, read it again at every use
    loaded, bad = {}, []
    for name, rows in indices.items():
        verb = "checking" if stream else "loading"
        loaded[name], rejected = load_samples(
            manifest, rows, readers, keep=not stream, progress=progress, desc=f"{verb} {name}"
        )
        bad += rejected
    bad.sort(key=lambda row: row.index)
    if bad and not skip_bad:
        raise BadRowsError(manifest, bad)
    skipped = {row.index for row in bad}
    indices = {name: [i for i in rows if i not in skipped] for name, rows in indices.items()}
    splits = {
        name: SampleSet(manifest, rows, readers, None if stream else loaded[name])
        for name, rows in indices.items()
    }
    if not splits["train"]:
        raise DataError(f"{manifest.path.name}: no usable rows in the training split")
    for name, modality in readers.modalities.items():
        cells = ((manifest.rows[i].get(c) for c in modality.columns()) for i in indices["train"])
        if all(all(is_missing(cell) for cell in row) for row in cells):
            raise DataError(f"modality '{name}' is absent from every training sample")
    if not splits["test"] and not splits["val"]:
        raise DataError(f"{manifest.path.name}: no rows in the val or test split to evaluate on")
    notes = {name: note for name, m in readers.modalities.items() if (note := m.notes())}
    labels = label_notes(manifest, indices, readers.tasks)
    for note in [*notes.values(), *labels.values()]:
        if "message" in note:
            logger.warning(note["message"])
    return Prepared(
        config=config,
        splits=splits,
        collate=readers.collate(),
        manifest=manifest,
        rows=indices,
        notes=notes,
        labels=labels,
        skipped=bad,
    )


def _from_shards(config: RunConfig) -> Prepared:
    """The splits of `data.shards`, already preprocessed (`omnifuse data shard`)."""
    if config.train.init is not None:
        config = reuse_fitted(config, saved_config(config.train.init))
    shards = open_shards(config)
    readers = Readers.of(shards.config)
    splits = {
        name: SampleSet(shards.manifest, shards.rows[name], readers, samples)
        for name, samples in shards.splits.items()
    }
    if not splits["train"]:
        raise DataError(f"{config.data.shards}: no rows in the training split")
    return Prepared(
        config=shards.config,
        splits=splits,
        collate=shards.collate(),
        manifest=shards.manifest,
        rows=shards.rows,
        notes=shards.notes,
        skipped=shards.skipped,
        features=shards.features,
    )


def train(
    prepared: Prepared,
    *,
    modalities: Sequence[str] | None = None,
    checkpoints: Path | None = None,
    resume: bool = False,
    log: RunLog | None = None,
    progress: bool = True,
    desc: str = "training",
    stop: Callable[[History], bool] | None = None,
) -> Trained:
    """Build a fresh model from the prepared config (optionally seeing only `modalities`),
    train it (checkpointing into `checkpoints`, resuming from there; `stop`: asked after each
    epoch whether to end early, as `fit` does) and evaluate it on the evaluation split."""
    config = prepared.config
    splits = prepared.splits
    if modalities is not None:
        config = config.without_modalities(modalities)
        splits = {name: samples.only(modalities) for name, samples in splits.items()}
    workers = config.data.loader_workers
    threads = distributed.share_cores(config.train.threads, workers)
    where = distributed.device(config.train.device)
    logger.info(
        "training on %s with %d torch threads in each of %d processes, %d data workers each",
        where,
        threads,
        ranks.world(),
        workers,
    )
    seed_everything(config.train.seed)
    model = OmnifuseModel.build(config)
    if config.train.init is not None:
        loaded = model.load_matching(config.train.init, config.train.init_parts)
        logger.info(
            "started from %s: %d of %d weights",
            config.train.init,
            len(loaded),
            len(model.state_dict()),
        )
    read_features(model, prepared.features)
    model.to(where)

    def validate(model: OmnifuseModel) -> dict[str, float]:
        metrics = evaluate(
            model, splits["val"], prepared.collate, workers=workers, across_ranks=True
        )
        return {f"{task}/{key}": value for task, m in metrics.items() for key, value in m.items()}

    start = time.perf_counter()
    history = fit(
        model,
        splits["train"],
        config.train,
        collate=prepared.collate,
        workers=workers,
        validate=validate if splits["val"] else None,
        checkpoints=checkpoints,
        resume=resume,
        log=log,
        progress=progress,
        desc=desc,
        stop=stop,
    )
    seconds = time.perf_counter() - start
    evaluation = splits[prepared.evaluation]  # every rank its part, every rank the metrics
    metrics = evaluate(model, evaluation, prepared.collate, workers=workers, across_ranks=True)
    model = distributed.whole(model)  # rank 0 saves and reports it alone
    read_features(model, prepared.features)  # FSDP's gathered copy reads them too
    compute: dict[str, int | str] = {
        "device": str(where),
        "threads": threads,
        "processes": ranks.world(),
        "workers": workers,
    }
    return Trained(model, history, metrics, seconds, compute)


def write_figures(trained: Trained, prepared: Prepared, out: Path) -> list[str]:
    """Training curves, a confusion matrix per classification task and retrieval examples per
    image-text alignment task; returns the file names written."""
    split = prepared.evaluation
    samples = prepared.splits[split]
    plot_training(trained.history.steps, trained.history.epochs, out / "training_curves.png")
    figures = ["training_curves.png"]
    predictions = predict(trained.model, samples, prepared.collate)
    for name, task in trained.model.task_dict().items():
        if isinstance(task, Classification):
            p = predictions[name]
            matrix = confusion_matrix(p.prediction.argmax(-1), p.target, len(task.classes))
            plot_confusion(
                matrix, task.classes, f"{name} ({split} split)", out / f"confusion_{name}.png"
            )
            figures.append(f"confusion_{name}.png")
        elif isinstance(task, Alignment):
            figure = f"retrieval_{name}.png"
            rows = prepared.rows[split]
            if plot_retrieval_examples(
                trained.model,
                task,
                prepared.manifest,
                rows,
                samples,
                prepared.collate,
                out / figure,
            ):
                figures.append(figure)
    return figures


def write_skipped(rows: Sequence[BadRow], path: Path) -> None:
    """One JSON line per row left out: its 1-based row number, id and problem."""
    path.unlink(missing_ok=True)
    if rows:
        lines = [
            json.dumps({"row": r.index + 1, "where": r.where, "problem": r.problem}) for r in rows
        ]
        path.write_text("\n".join(lines) + "\n")
        logger.warning("left out %d bad rows, listed in %s", len(rows), path)


def start_run(config: RunConfig, out: Path, *, resume: bool, write: bool = True) -> None:
    """Check that `out` can hold this run (or holds the run to resume), and (with `write`)
    save the resolved config there before any training."""
    checkpoint, saved = out / CHECKPOINT_FILE, out / CONFIG_FILE
    resolved = config.model_dump(mode="json")
    if resume:
        if not checkpoint.is_file():
            raise OmnifuseError(f"{out}: no {CHECKPOINT_FILE} to resume from")
        if not saved.is_file() or json.loads(saved.read_text()) != resolved:
            raise OmnifuseError(
                f"{out}: the run there was started with a different config; "
                "resume it with the same config and data"
            )
        return
    if checkpoint.is_file():
        raise OmnifuseError(
            f"{out} already holds a run ({CHECKPOINT_FILE}): continue it with --resume, "
            "or choose another --out"
        )
    if write:
        out.mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps(resolved, indent=2) + "\n")


def run(
    config: RunConfig,
    out: Path,
    *,
    baselines: bool = False,
    checkpoints: bool = True,
    resume: bool = False,
    skip_bad: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train and evaluate `config`, write everything to `out`, return the metrics written.

    With `checkpoints`, training state is saved in `out` as it goes, and `resume` continues a
    run stopped there. With `baselines`, also train one model per single modality. With
    `skip_bad`, unusable manifest rows are left out and listed in `skipped_rows.jsonl`.

    Under `torchrun` every process runs this and trains with DDP (`train/distributed.py`):
    rank 0 logs, checkpoints, evaluates, writes and returns the metrics; the others return {}.
    """
    if out.exists() and not out.is_dir():  # before any work, like every check below
        raise OmnifuseError(f"{out}: a file, not a folder; choose another --out")
    if baselines:  # every single-modality model needs a task it can run
        for modality in sorted(config.modalities):
            config.without_modalities([modality])
    with distributed.session(config.train.device):
        prepared = prepare(config, skip_bad=skip_bad, progress=progress and ranks.main())
        return run_prepared(
            prepared,
            out,
            baselines=baselines,
            checkpoints=checkpoints,
            resume=resume,
            progress=progress,
        )


def run_prepared(
    prepared: Prepared,
    out: Path,
    *,
    baselines: bool = False,
    checkpoints: bool = True,
    resume: bool = False,
    progress: bool = True,
    stop: Callable[[History], bool] | None = None,
) -> dict[str, Any]:
    """`run` on data already prepared (several runs of one data set prepare it once): the
    same run directory in `out`. `stop`: asked after each epoch whether to end training
    early (`fit`); the run is then evaluated and written as it stands."""
    main = ranks.main()
    if checkpoints:  # every rank checks `out`, so that all stop alike; rank 0 writes
        start_run(prepared.config, out, resume=resume, write=main)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        write_skipped(prepared.skipped, out / SKIPPED_FILE)
    trained = train(
        prepared,
        checkpoints=out if checkpoints else None,
        resume=resume,
        log=RunLog(out) if main else None,
        progress=progress and main,
        stop=stop,
    )
    if main:
        return _report(trained, prepared, out, baselines=baselines, progress=progress)
    for modality in sorted(prepared.config.modalities) if baselines else []:
        train(prepared, modalities=[modality], progress=False)  # with rank 0's baselines
    return {}


def _report(
    trained: Trained, prepared: Prepared, out: Path, *, baselines: bool, progress: bool
) -> dict[str, Any]:
    """Rank 0's part of a run after training: the model, figures, metrics, baselines, report."""
    trained.model.save_pretrained(out)
    figures = write_figures(trained, prepared, out)
    samples = prepared.splits[prepared.evaluation]
    metrics: dict[str, Any] = {
        "tasks": trained.metrics,
        "train_seconds": round(trained.train_seconds, 2),
        # fewer than train.epochs when `stop` ended training early
        "epochs_trained": trained.history.steps[-1]["epoch"] if trained.history.steps else 0,
        "compute": trained.compute,
        "samples": sum(len(s) for s in prepared.splits.values()),
        "splits": {name: len(s) for name, s in prepared.splits.items()},
        "evaluated_on": prepared.evaluation,
        "skipped_rows": len(prepared.skipped),
        "data": prepared.notes,
        "labels": prepared.labels,
        "ablation": modality_ablation(trained.model, samples, prepared.collate),
    }
    if examples := generation_examples(trained.model, samples, prepared.collate):
        metrics["examples"] = examples  # a few generated texts beside their references
    if baselines:
        metrics["baselines"] = {}
        for modality in sorted(prepared.config.modalities):
            alone = train(
                prepared, modalities=[modality], progress=progress, desc=f"only {modality}"
            )
            metrics["baselines"][modality] = {
                "tasks": alone.metrics,
                "train_seconds": round(alone.train_seconds, 2),
            }
    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
    write_report(out, metrics, figures)
    return metrics
