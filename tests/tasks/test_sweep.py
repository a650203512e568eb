"""Every registered task, in a tiny model on the generated world: one forward and backward,
finite losses, a gradient for every parameter of the task, and a prediction that the content
of an absent modality cannot change."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from omnifuse.config import parse_config
from omnifuse.model import OmnifuseModel
from omnifuse.registry import list_tasks
from omnifuse.train.run import Prepared, prepare
from tests.conftest import tiny_config

# the options each built-in task is swept with; a new task type adds its line here
OPTIONS: dict[str, dict[str, Any]] = {
    "alignment": {"between": ["image", "text"], "embed_dim": 8},
    "classification": {"target": "scene_class"},
    "generation": {"target": "caption", "max_length": 12, "depth": 1},
    "image_generation": {"modality": "image", "tokenizer": "TOKENIZER", "depth": 1},
    "image_tokenizer": {
        "modality": "image",
        "width": 4,
        "levels": [5, 5, 5],
        "foreground_weight": 1.0,
    },
    "reconstruction": {"modality": "audio", "teacher_momentum": 0.9},
    "regression": {"target": "score"},
}


def test_every_registered_task_is_swept():
    assert set(list_tasks()) == set(OPTIONS)


@pytest.fixture(scope="module")
def prepared(world: Path, image_tokenizer: Path) -> Prepared:
    config = tiny_config(world)
    config["model"]["tasks"] = {name: {"type": name, **o} for name, o in OPTIONS.items()}
    config["model"]["tasks"]["image_generation"]["tokenizer"] = str(image_tokenizer)
    return prepare(parse_config(config), progress=False)


@pytest.mark.parametrize("task", sorted(OPTIONS))
def test_forward_backward_and_gradients(prepared: Prepared, task: str):
    torch.manual_seed(0)
    model = OmnifuseModel.build(prepared.config).train()
    batch = prepared.collate(prepared.splits["train"][:16])
    losses = model.training_forward(batch)
    loss = losses[f"loss/{task}"]
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    module = model.tasks[task]
    without = [n for n, p in module.named_parameters() if p.requires_grad and p.grad is None]
    assert without == []
    assert all(torch.isfinite(p.grad).all() for p in module.parameters() if p.grad is not None)


@pytest.mark.parametrize("task", sorted(OPTIONS))
def test_absent_content_cannot_change_the_prediction(prepared: Prepared, task: str):
    model = OmnifuseModel.build(prepared.config).eval()
    batch = prepared.collate(prepared.splits["val"][:8])
    batch.present["image"][:4] = False
    before = model(batch).outputs[task]
    batch.inputs["image"][:4] = torch.randn_like(batch.inputs["image"][:4]) * 10
    after = model(batch).outputs[task]
    torch.testing.assert_close(before[:4], after[:4])
