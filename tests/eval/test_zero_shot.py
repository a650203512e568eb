"""Zero-shot classification: a tiny model aligning vectors with their class names as text
classifies unseen vectors by those names; the library function and `omnifuse eval
--zero-shot`, and their errors."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from click.testing import CliRunner

from omnifuse.cli import cli
from omnifuse.config import parse_config
from omnifuse.errors import OmnifuseError
from omnifuse.eval.zero_shot import zero_shot
from omnifuse.inference import evaluate_saved
from omnifuse.model import OmnifuseModel
from omnifuse.train.run import prepare, train

CLASSES = ["red", "green", "blue", "gold"]


def write_manifest(path: Path, n: int = 64, seed: int = 0) -> Path:
    """Rows whose 4-number vector points at its class (one-hot, noisy) and whose text is the
    class name; a third of the texts are missing, and the label column says the class."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = i % len(CLASSES)
        vector = [(3.0 if k == label else 0.0) + rng.gauss(0, 0.2) for k in range(4)]
        split = "test" if i % 8 == 0 else "val" if i % 8 == 1 else "train"
        rows.append(
            {
                "id": f"s{i}",
                "vec": vector,
                "name": CLASSES[label] if i % 3 else None,
                "label": CLASSES[label],
                "split": split,
            }
        )
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture(scope="module")
def aligned(tmp_path_factory: pytest.TempPathFactory) -> tuple[OmnifuseModel, Path, Path]:
    """A model trained only to align `vec` with `name`, saved; its folder and manifest."""
    folder = tmp_path_factory.mktemp("zero_shot")
    manifest = write_manifest(folder / "data.jsonl")
    config = parse_config(
        {
            "data": {"manifest": str(manifest)},
            "modalities": {
                "vec": {"kind": "vector", "dim": 4},
                "name": {
                    "kind": "text",
                    "max_length": 8,
                    "encoder": {"type": "text_transformer", "depth": 1},
                },
            },
            "model": {
                "dim": 16,
                "fusion": {"type": "unimodal", "modality": "vec"},
                "tasks": {
                    "align": {"type": "alignment", "between": ["vec", "name"], "embed_dim": 8}
                },
            },
            "train": {"epochs": 12, "batch_size": 16, "lr": 5e-3, "seed": 0},
        }
    )
    trained = train(prepare(config, progress=False), progress=False)
    trained.model.save_pretrained(folder / "model")
    return trained.model, folder / "model", manifest


def test_zero_shot_classifies_vectors_by_their_class_names(aligned):
    model, _, manifest = aligned
    unseen = write_manifest(manifest.parent / "unseen.jsonl", n=24, seed=7)
    metrics = evaluate_saved(model, unseen, zero_shot="label")
    result = metrics["zero_shot"]
    assert result["task"] == "align" and result["text"] == "name"
    assert result["classes"] == sorted(CLASSES)  # no classification task: the distinct values
    assert result["samples"] == {"vec": 24}  # every row has a vector and a label
    assert result["accuracy"]["vec"] >= 0.9
    assert "vec_to_name_mrr" in metrics["tasks"]["align"]


def test_zero_shot_library_function_returns_predictions(aligned):
    model, _, manifest = aligned
    from omnifuse.data.dataset import Readers, load_samples
    from omnifuse.manifest import read_manifest

    table = read_manifest(manifest)
    samples, _ = load_samples(table, range(8), Readers.of(model.config))
    labels = [row["label"] for row in table.rows[:8]]
    labels[0] = None  # unlabelled: predicted, not scored
    result = zero_shot(model, samples, labels, CLASSES, prompt="{}")
    assert len(result.predictions["vec"]) == 8
    assert result.samples == {"vec": 7}
    assert result.predictions["vec"][1:] == labels[1:]
    with pytest.raises(OmnifuseError, match="put \\{\\} where the class name goes"):
        zero_shot(model, samples, labels, CLASSES, prompt="a colour")


def test_eval_command_zero_shot_and_its_errors(aligned):
    _, folder, manifest = aligned
    runner = CliRunner()
    result = runner.invoke(
        cli,
        ["eval", str(folder), "--data", str(manifest), "--zero-shot", "label", "--prompt", "{}"],
    )
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout.strip().splitlines()[-1])
    assert printed["zero_shot"]["accuracy"]["vec"] >= 0.9
    assert "zero_shot/label/vec_accuracy" in result.stderr

    result = runner.invoke(
        cli, ["eval", str(folder), "--data", str(manifest), "--zero-shot", "labl"]
    )
    assert result.exit_code == 1
    assert "no column 'labl' (did you mean 'label'?) to classify" in result.stderr


def test_zero_shot_needs_a_text_modality_in_an_alignment(tmp_path: Path):
    manifest = write_manifest(tmp_path / "data.jsonl", n=16)
    config = parse_config(
        {
            "data": {"manifest": str(manifest)},
            "modalities": {
                "vec": {"kind": "vector", "dim": 4},
                "other": {"kind": "vector", "dim": 4, "column": "vec"},
            },
            "model": {
                "dim": 8,
                "fusion": {"type": "unimodal", "modality": "vec"},
                "tasks": {"align": {"type": "alignment", "between": ["vec", "other"]}},
            },
        }
    )
    model = OmnifuseModel.build(config)
    with pytest.raises(OmnifuseError, match="the model has no alignment task with a text modality"):
        zero_shot(model, [], [], CLASSES)


def test_class_names_come_from_a_classification_task_on_the_column(tmp_path: Path):
    from omnifuse.data.dataset import Readers, load_samples
    from omnifuse.inference import zero_shot_column
    from omnifuse.manifest import read_manifest

    manifest = read_manifest(write_manifest(tmp_path / "data.jsonl", n=8))
    pinned = ["gold", "red", "green", "blue"]  # a fitted (here pinned) order, not sorted
    config = parse_config(
        {
            "data": {"manifest": str(manifest.path)},
            "modalities": {
                "vec": {"kind": "vector", "dim": 4},
                "name": {"kind": "text", "encoder": {"type": "text_transformer", "depth": 1}},
            },
            "model": {
                "dim": 8,
                "fusion": {"type": "unimodal", "modality": "vec"},
                "tasks": {
                    "align": {"type": "alignment", "between": ["vec", "name"]},
                    "colour": {"type": "classification", "target": "label", "classes": pinned},
                },
            },
        }
    )
    model = OmnifuseModel.build(config)
    rows = list(range(8))
    samples, _ = load_samples(manifest, rows, Readers.of(model.config))
    result = zero_shot_column(model, manifest, rows, samples, "label", "a {} thing")
    assert result["classes"] == pinned
    assert result["prompt"] == "a {} thing"
    assert result["samples"] == {"vec": 8}
