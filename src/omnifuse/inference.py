"""A trained model on new inputs: a manifest, or loose files each read as the model's
modality that reads its suffix; predictions and embeddings as JSON-able rows.

    model = OmnifuseModel.from_pretrained("runs/world")
    samples = load_inputs(model, ["cat.png", "dog.wav"])
    for row in predict_rows(model, samples): print(row)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from omnifuse.data.dataset import BadRowsError, Readers, load_samples, read_splits
from omnifuse.data.shards import open_shards, read_features
from omnifuse.errors import ConfigError, DataError
from omnifuse.eval.evaluate import evaluate
from omnifuse.eval.zero_shot import PLACEHOLDER, zero_shot
from omnifuse.interfaces import Sample
from omnifuse.manifest import Manifest, read_manifest
from omnifuse.model import OmnifuseModel
from omnifuse.registry import closest
from omnifuse.tasks.alignment import aligned_task
from omnifuse.tasks.classification import ClassificationSpec, label_text

MANIFEST_SUFFIXES = (".csv", ".jsonl", ".ndjson", ".parquet")


def inputs_manifest(model: OmnifuseModel, inputs: Sequence[str | Path]) -> Manifest:
    """One manifest file as it is, or one row per file given to the model's only modality of
    the file's kind (images, audio, .txt text)."""
    paths = [Path(item) for item in inputs]
    if len(paths) == 1 and paths[0].suffix.lower() in MANIFEST_SUFFIXES:
        return read_manifest(paths[0])
    rows = []
    for path in paths:
        if not path.is_file():
            raise DataError(f"{path}: file not found")
        suffix = path.suffix.lower()
        names = sorted(n for n, m in model.modalities.items() if suffix in m.suffixes)
        if not names:
            reads = ", ".join(f"{n} ({m.config.kind})" for n, m in sorted(model.modalities.items()))
            raise DataError(f"{path}: not a file this model reads; its modalities: {reads}")
        if len(names) > 1:
            raise DataError(
                f"{path}: the model has several modalities that read {suffix} files "
                f"({', '.join(names)}); give a manifest whose columns say which"
            )
        modality = model.modalities[names[0]]
        rows.append({"id": str(path), modality.column: modality.cell(path)})
    return Manifest(Path.cwd() / "inputs", rows)


def load_inputs(model: OmnifuseModel, inputs: Sequence[str | Path]) -> list[Sample]:
    """Preprocessed samples for `inputs`; any unusable row stops with a BadRowsError."""
    manifest = inputs_manifest(model, inputs)
    samples, bad = load_samples(manifest, range(len(manifest.rows)), Readers.of(model.config))
    if bad:
        raise BadRowsError(manifest, bad)
    return samples


def evaluate_saved(
    model: OmnifuseModel,
    data: str | Path | None = None,
    *,
    split: str = "test",
    zero_shot: str | None = None,
    prompt: str = PLACEHOLDER,
) -> dict[str, Any]:
    """Metrics of a saved model: on every row of the manifest `data`, or on `split` of the
    data it was trained with. With `zero_shot` (a column of class labels), also zero-shot
    classification of that column through the model's alignment task with a text modality
    (`zero_shot_column`), under the key "zero_shot"."""
    readers = Readers.of(model.config)
    collate = readers.collate()
    if data is None and model.config.data.shards is not None:  # trained from shards: read them
        shards = open_shards(model.config)
        manifest, rows = shards.manifest, shards.rows[split]
        samples: Sequence[Sample] = shards.splits[split]
        collate = shards.collate()
        read_features(model, shards.features)
        stored = [n for n in shards.features if model.config.modalities[n].kind == "text"]
        if zero_shot and stored:
            raise ConfigError(
                f"--zero-shot: the shards hold {stored[0]}'s backbone features, not its texts, "
                "and class names are read as texts: evaluate on a manifest (--data)"
            )
    else:
        if data is not None:
            manifest = read_manifest(data)
            rows = list(range(len(manifest.rows)))
        else:
            manifest, splits = read_splits(model.config)
            rows = splits[split]
        samples, bad = load_samples(manifest, rows, readers)
        if bad:
            raise BadRowsError(manifest, bad)
    if not samples:
        raise DataError(f"{manifest.path.name}: no rows to evaluate on")
    where = str(data) if data is not None else f"{split} split"
    # zero-shot first: its errors (no such column, no text to read class names) come early
    zero = (
        zero_shot_column(model, manifest, rows, samples, zero_shot, prompt) if zero_shot else None
    )
    metrics = {"tasks": evaluate(model, samples, collate), "samples": len(samples), "data": where}
    return metrics | ({"zero_shot": zero} if zero is not None else {})


def zero_shot_column(
    model: OmnifuseModel,
    manifest: Manifest,
    rows: Sequence[int],
    samples: Sequence[Sample],
    column: str,
    prompt: str = PLACEHOLDER,
) -> dict[str, Any]:
    """Zero-shot classification of the labels in `column` of `rows` (whose loaded `samples`
    these are), as JSON. The class names are the classes of the model's classification task on
    that column, or else the distinct values of the column in the whole manifest."""
    columns = {key for row in manifest.rows for key in row}
    if column not in columns:
        raise DataError(
            f"{manifest.path.name}: no column '{column}'{closest(column, columns)} to classify"
        )
    fitted = [
        spec.classes
        for spec in Readers.of(model.config).tasks.values()
        if isinstance(spec, ClassificationSpec) and spec.target == column
    ]
    try:  # read by the rule every label is read by
        labels = [label_text(manifest.rows[i].get(column)) for i in rows]
        every = {label_text(row.get(column)) for row in manifest.rows}
    except DataError as error:
        raise DataError(f"{manifest.path.name}, column '{column}': {error}") from None
    classes = fitted[0] if fitted else sorted(c for c in every if c is not None)
    result = zero_shot(model, samples, labels, classes, prompt=prompt)
    return {
        "column": column,
        "task": result.task,
        "text": result.text,
        "prompt": result.prompt,
        "classes": result.classes,
        "accuracy": result.accuracy,
        "samples": result.samples,
    }


@torch.no_grad()
def _outputs(model: OmnifuseModel, samples: Sequence[Sample], batch_size: int) -> Iterator[Any]:
    """(samples, their batch, {task: output on the CPU}) per batch of `samples`."""
    model.eval()
    collate = Readers.of(model.config).collate()
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        batch = collate(chunk)
        yield chunk, batch, {n: v.cpu() for n, v in model(batch).outputs.items()}


def predict_rows(
    model: OmnifuseModel, samples: Sequence[Sample], *, batch_size: int = 256
) -> Iterator[dict[str, Any]]:
    """{"id": ..., task: prediction} per sample, for every task that predicts a target."""
    tasks = model.task_dict()
    for chunk, _, output in _outputs(model, samples, batch_size):
        for i, sample in enumerate(chunk):
            row: dict[str, Any] = {"id": sample.id}
            for name, task in tasks.items():
                described = task.describe(output[name][i])
                if described is not None:
                    row[name] = described
            yield row


def embed_rows(
    model: OmnifuseModel,
    samples: Sequence[Sample],
    *,
    task: str | None = None,
    batch_size: int = 256,
) -> Iterator[dict[str, Any]]:
    """{"id": ..., modality: embedding} per sample, in the space of an alignment task (the
    only one, or `task`), for each of its modalities the sample has."""
    chosen = aligned_task(model.task_dict(), task)
    between = chosen.between
    for chunk, batch, output in _outputs(model, samples, batch_size):
        vectors = output[chosen.name]  # (B, M, E), `between` in sorted order
        for i, sample in enumerate(chunk):
            row: dict[str, Any] = {"id": sample.id}
            for side, modality in enumerate(between):
                if batch.present[modality][i]:
                    row[modality] = [round(v, 6) for v in vectors[i, side].tolist()]
            yield row
