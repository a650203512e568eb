"""`model.unimodal_loss`: a fused model with a modality absent at test keeps what the model
of the remaining modality alone scores (graceful degradation), on a tiny two-modality task
in which each modality alone is informative."""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from omnifuse.config import RunConfig, parse_config
from omnifuse.eval.report import modality_ablation
from omnifuse.model import OmnifuseModel, one_present
from omnifuse.train.run import Prepared, prepare, train

# one test sample is 1/160 of the accuracy; the fused model without a modality is allowed
# this far below the model trained on the other modality alone
TOLERANCE = 0.05


@pytest.fixture(scope="module")
def noisy_pair(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """800 rows: a label y in 0..3 and two numbers, each y plus its own Gaussian noise, so
    that each modality alone is informative (about 0.67) and both together more (about 0.8)."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("pair") / "pair.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["xa", "xb", "y", "split"])
        for i in range(800):
            y = int(rng.integers(4))
            split = "train" if i < 560 else "val" if i < 640 else "test"
            writer.writerow([y + rng.normal(0, 0.6), y + rng.normal(0, 0.6), y, split])
    return path


def pair_config(path: Path, fusion: str, **model: Any) -> RunConfig:
    model = {"unimodal_loss": 1.0, **model}
    return parse_config(
        {
            "data": {"manifest": str(path)},
            "modalities": {
                "a": {"kind": "tabular", "numeric": ["xa"]},
                "b": {"kind": "tabular", "numeric": ["xb"]},
            },
            "model": {
                "dim": 16,
                "fusion": {"type": fusion, **({"modality": "a"} if fusion == "unimodal" else {})},
                "tasks": {"y": {"type": "classification", "target": "y"}},
                **model,
            },
            "train": {"epochs": 4, "batch_size": 32, "lr": 1e-2, "seed": 0, "threads": 1},
        }
    )


@pytest.fixture(scope="module")
def alone(noisy_pair: Path) -> dict[str, float]:
    """Test accuracy of the model of each modality alone."""
    prepared = prepare(pair_config(noisy_pair, "late"), progress=False)
    return {
        m: train(prepared, modalities=[m], progress=False).metrics["y"]["accuracy"]
        for m in ("a", "b")
    }


def without(prepared: Prepared) -> tuple[float, dict[str, float]]:
    """(accuracy with both, {modality: accuracy with it absent from every test sample})."""
    trained = train(prepared, progress=False)
    ablation = modality_ablation(trained.model, prepared.splits["test"], prepared.collate)
    return trained.metrics["y"]["accuracy"], {m: v["y"]["accuracy"] for m, v in ablation.items()}


@pytest.mark.parametrize("fusion", ["late", "perceiver", "tensor"])
def test_a_missing_modality_costs_no_more_than_the_other_alone_scores(
    noisy_pair: Path, alone: dict[str, float], fusion: str
):
    both, missing = without(prepare(pair_config(noisy_pair, fusion), progress=False))
    assert both > max(alone.values())  # fusion helps
    assert missing["b"] >= alone["a"] - TOLERANCE
    assert missing["a"] >= alone["b"] - TOLERANCE


def test_without_the_loss_a_vector_fusion_degrades(noisy_pair: Path, alone: dict[str, float]):
    """What the option fixes: a tensor fusion never trained without a modality falls far
    below the remaining modality alone once it is missing."""
    config = pair_config(noisy_pair, "tensor", unimodal_loss=0.0)
    _, missing = without(prepare(config, progress=False))
    assert min(missing["b"] - alone["a"], missing["a"] - alone["b"]) < -0.15


def test_the_loss_of_one_modality_alone(noisy_pair: Path):
    prepared = prepare(pair_config(noisy_pair, "late"), progress=False)
    torch.manual_seed(0)
    model = OmnifuseModel.build(prepared.config).train()
    batch = prepared.collate(prepared.splits["train"][:16])
    losses = model.training_forward(batch)
    torch.testing.assert_close(losses["loss"], losses["loss/y"] + losses["alone/y"])  # weight 1
    # without b, every sample's one modality is a: late fusion reuses a's part, and the
    # prediction is the model's without b
    without_b = replace(batch, present={**batch.present, "b": torch.zeros_like(batch.present["b"])})
    torch.testing.assert_close(model(without_b).alone["y"], model(without_b).outputs["y"])
    # a sample with nothing does not count; with no sample left, the loss is zero
    nothing = replace(without_b, present={**without_b.present, "a": without_b.present["b"]})
    assert model.training_forward(nothing)["alone/y"].item() == 0.0
    fitted = prepared.config.model_dump(mode="json")
    fitted["model"]["unimodal_loss"] = 0.0
    off = OmnifuseModel.build(parse_config(fitted)).train()
    assert not any(key.startswith("alone/") for key in off.training_forward(batch))
    assert not model.eval()(batch).alone  # training only


def test_one_present_draws_one_of_each_samples_modalities():
    present = {
        "a": torch.tensor([True, True, False, False]),
        "b": torch.tensor([True, False, True, False]),
    }
    for seed in range(20):
        torch.manual_seed(seed)
        chosen = one_present(present)
        assert (chosen["a"] & chosen["b"]).sum() == 0
        assert chosen["a"][1] and chosen["b"][2] and not (chosen["a"][3] or chosen["b"][3])
        assert (chosen["a"] <= present["a"]).all() and (chosen["b"] <= present["b"]).all()
        assert chosen["a"][0] or chosen["b"][0]


def test_on_by_default_for_late_fusion_only(noisy_pair: Path):
    assert pair_config(noisy_pair, "late", unimodal_loss=None).model.unimodal_weight() == 1.0
    assert pair_config(noisy_pair, "perceiver", unimodal_loss=None).model.unimodal_weight() == 0
    assert pair_config(noisy_pair, "perceiver", unimodal_loss=0.5).model.unimodal_weight() == 0.5
    assert pair_config(noisy_pair, "unimodal", unimodal_loss=1.0).model.unimodal_weight() == 0
