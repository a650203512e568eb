"""A tiny end-to-end run: the loss falls, files are written, seeds reproduce."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from omnifuse.config import parse_config
from omnifuse.train.loop import warmup_cosine
from omnifuse.train.run import prepare, run, train
from tests.conftest import tiny_config


def test_warmup_then_cosine():
    factor = warmup_cosine(total=10, warmup=2)
    assert [round(factor(s), 3) for s in (0, 1, 2, 6, 10)] == [0.5, 1.0, 1.0, 0.5, 0.0]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_loss_falls_on_the_tiny_world(world: Path, precision: str):
    epochs = 40
    data = tiny_config(world, epochs=epochs, lr=5e-3, precision=precision)
    prepared = prepare(parse_config(data), progress=False)
    trained = train(prepared, progress=False)
    steps = trained.history.steps
    assert all(
        {"loss", "loss/scene", "loss/score", "loss/retrieval", "lr"} <= set(s) for s in steps
    )
    per_epoch = len(steps) // epochs

    def mean(key: str, part: list[dict[str, float]]) -> float:
        return sum(s[key] for s in part) / len(part)

    first, last = steps[:per_epoch], steps[-per_epoch:]
    assert mean("loss", last) < 0.6 * mean("loss", first)
    assert mean("loss/scene", last) < 0.5 * mean("loss/scene", first)
    assert mean("loss/score", last) < 0.3 * mean("loss/score", first)
    assert mean("loss/retrieval", last) < 0.85 * mean("loss/retrieval", first)
    # bf16 computes the products only: the weights stay float32, predictions come as float32
    assert all(p.dtype == torch.float32 for p in trained.model.parameters())
    batch = prepared.collate([prepared.splits["val"][i] for i in range(4)])
    with torch.no_grad():
        outputs = trained.model.eval()(batch).outputs
    assert all(v.dtype == torch.float32 for v in outputs.values() if v.is_floating_point())


def test_same_seed_same_metrics(world: Path):
    config = parse_config(tiny_config(world, epochs=1))
    prepared = prepare(config, progress=False)
    assert train(prepared, progress=False).metrics == train(prepared, progress=False).metrics


def test_run_writes_metrics_plots_and_model(world: Path, tmp_path: Path):
    metrics = run(
        parse_config(tiny_config(world, epochs=1)), tmp_path, baselines=True, progress=False
    )
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert json.dumps(written) == json.dumps(metrics)  # NaN-safe: ablation has undefined metrics
    assert set(written["tasks"]) == {"scene", "score", "retrieval"}
    assert set(written["tasks"]["scene"]) == {"accuracy", "macro_f1"}
    assert "image_to_text_R@1" in written["tasks"]["retrieval"]
    assert written["samples"] == 160 and written["train_seconds"] > 0
    assert set(written["baselines"]) == {"audio", "image", "tabular", "text"}
    assert set(written["baselines"]["audio"]["tasks"]) == {"scene", "score"}  # no pair to align
    for name in ("training_curves.png", "confusion_scene.png", "config.json", "model.safetensors"):
        assert (tmp_path / name).stat().st_size > 0
