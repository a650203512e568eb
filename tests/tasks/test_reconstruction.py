"""Reconstruction of a hidden modality, EMA teachers and uncertainty loss weighting."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from omnifuse.config import parse_config
from omnifuse.errors import ConfigError, OmnifuseError
from omnifuse.interfaces import Batch
from omnifuse.model import OmnifuseModel
from omnifuse.registry import create_task
from omnifuse.tasks.base import mask_tokens
from omnifuse.train.run import Prepared, prepare, train
from tests.conftest import tiny_config


def with_tasks(world: Path, tasks: dict[str, Any], **model: Any) -> dict[str, Any]:
    config = tiny_config(world)
    config["model"]["tasks"] = tasks
    config["model"] |= model
    return config


@pytest.fixture(scope="module")
def prepared(world: Path) -> Prepared:
    tasks = {
        "scene": {"type": "classification", "target": "scene_class"},
        "impute_image": {"type": "reconstruction", "modality": "image"},
        "impute_audio": {"type": "reconstruction", "modality": "audio", "teacher_momentum": 0.9},
    }
    return prepare(parse_config(with_tasks(world, tasks)), progress=False)


def batch_of(prepared: Prepared, n: int = 8) -> Batch:
    return prepared.collate(prepared.splits["train"][:n])


def test_the_loss_is_one_minus_the_cosine_by_hand():
    task = create_task("reconstruction", "r", modality="a").build(dim=2, modalities=["a", "b"])
    prediction = torch.tensor([[[1.0, 0.0], [0.0, 2.0]], [[1.0, 1.0], [3.0, 3.0]]])
    batch = Batch(["0", "1"], {}, {}, {"a": torch.tensor([True, True])}, {}, {})
    # cosines: 0 and 1 -> losses 1 and 0
    assert task.loss(prediction, batch).item() == pytest.approx(0.5)
    batch.present["a"][1] = False  # a sample without the modality has nothing to reconstruct
    assert task.loss(prediction, batch).item() == pytest.approx(1.0)


def test_metrics_on_known_embeddings():
    task = create_task("reconstruction", "r", modality="a").build(dim=2, modalities=["a", "b"])
    true = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    imputed = torch.tensor([[2.0, 0.1], [0.1, 1.0], [0.0, 1.0]])  # the last retrieves row 1
    metrics = task.metrics(torch.stack([imputed, true], 1), torch.zeros(3))
    assert metrics["retrieval_R@1"] == pytest.approx(2 / 3)
    cosines = torch.nn.functional.cosine_similarity(imputed, true, dim=-1)
    assert metrics["cosine"] == pytest.approx(cosines.mean().item())


def test_the_prediction_never_reads_the_hidden_modality(prepared: Prepared):
    model = OmnifuseModel.build(prepared.config).eval()
    batch = batch_of(prepared)
    before = model(batch).outputs
    batch.inputs["image"] = torch.randn_like(batch.inputs["image"]) * 10
    after = model(batch).outputs
    torch.testing.assert_close(before["impute_image"][:, 0], after["impute_image"][:, 0])
    # the target is the image's own embedding, and the other tasks do see the image
    assert not torch.allclose(before["impute_image"][:, 1], after["impute_image"][:, 1])
    assert not torch.allclose(before["scene"], after["scene"])


def test_the_target_is_the_pooled_embedding_of_the_present_modality(prepared: Prepared):
    model = OmnifuseModel.build(prepared.config).eval()
    batch = batch_of(prepared)
    output = model(batch)
    torch.testing.assert_close(output.outputs["impute_image"][:, 1], output.embeddings["image"])


def test_the_ema_teacher_follows_its_encoder_and_gives_the_targets(prepared: Prepared):
    model = OmnifuseModel.build(prepared.config)
    teachers = {n: t.teacher for n, t in model.task_dict().items() if getattr(t, "teacher", None)}
    assert sorted(teachers) == ["impute_audio"]
    teacher, encoder = teachers["impute_audio"], model.encoders["audio"]
    assert not any(p.requires_grad for p in teacher.parameters())
    before = copy.deepcopy(teacher)
    with torch.no_grad():
        for p in encoder.parameters():
            p.add_(1.0)
    model.after_step()
    for old, new, online in zip(
        before.parameters(), teacher.parameters(), encoder.parameters(), strict=True
    ):
        torch.testing.assert_close(new, 0.9 * old + 0.1 * online)
    # the teacher's embedding is the target, not the online encoder's
    model.eval()
    output = model(batch_of(prepared))
    assert not torch.allclose(output.outputs["impute_audio"][:, 1], output.embeddings["audio"])


def test_training_reduces_the_reconstruction_loss(prepared: Prepared):
    torch.manual_seed(0)
    model = OmnifuseModel.build(prepared.config).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    batch = batch_of(prepared, 32)
    first = None
    for _ in range(30):
        losses = model.training_forward(batch)
        optimizer.zero_grad()
        losses["loss/impute_image"].backward()
        optimizer.step()
        first = first if first is not None else losses["loss/impute_image"].item()
    assert losses["loss/impute_image"].item() < first / 2


def test_uncertainty_weighting_by_hand(world: Path):
    tasks = {
        "scene": {"type": "classification", "target": "scene_class"},
        "score": {"type": "regression", "target": "score", "weight": 2.0},
    }
    config = with_tasks(world, tasks, loss_weighting="uncertainty")
    prepared = prepare(parse_config(config), progress=False)
    model = OmnifuseModel.build(prepared.config).eval()
    with torch.no_grad():
        model.log_variances["scene"].fill_(0.5)
        model.log_variances["score"].fill_(-1.0)
    losses = model.training_forward(batch_of(prepared))
    scene, score = losses["loss/scene"], losses["loss/score"]
    expected = (
        torch.exp(torch.tensor(-0.5)) * scene + 0.5 + torch.exp(torch.tensor(1.0)) * 2 * score - 1
    )
    torch.testing.assert_close(losses["loss"], expected)
    assert losses["weight/scene"].item() == pytest.approx(torch.exp(torch.tensor(-0.5)).item())
    # the log-variances learn: they get gradients
    losses["loss"].backward()
    assert model.log_variances["score"].grad is not None


def test_a_model_saved_with_the_old_teacher_layout_says_to_retrain(
    prepared: Prepared, tmp_path: Path
):
    model = OmnifuseModel.build(prepared.config)
    model.save_pretrained(tmp_path)
    weights = load_file(str(tmp_path / "model.safetensors"))
    # omnifuse 0.1 kept the EMA teacher of a modality under `teachers.<modality>.`
    old = {
        k.replace("tasks.impute_audio.teacher.", "teachers.audio."): v for k, v in weights.items()
    }
    save_file(old, str(tmp_path / "model.safetensors"))
    with pytest.raises(OmnifuseError, match=r"saved by omnifuse 0\.1.*retrain this model"):
        OmnifuseModel.from_pretrained(tmp_path)


def test_config_errors_name_the_field():
    spec = create_task("reconstruction", "r", modality="imag")
    assert spec.unmet(["audio", "image"]) == (
        "modality: unknown modality 'imag' (did you mean 'image'?); the config defines audio, image"
    )
    assert "only one" in create_task("reconstruction", "r", modality="image").unmet(["image"])
    assert create_task("reconstruction", "r", modality="image").unmet(["a", "image"]) is None
    with pytest.raises(ConfigError, match=r"model\.tasks\.r\.teacher_momentum"):
        create_task("reconstruction", "r", modality="a", teacher_momentum=1.5)


def test_masked_modelling_hides_a_fraction_of_tokens_in_training_only(world: Path):
    tasks = {"impute_image": {"type": "reconstruction", "modality": "image", "mask_ratio": 0.5}}
    prepared = prepare(parse_config(with_tasks(world, tasks)), progress=False)
    model = OmnifuseModel.build(prepared.config)
    batch = batch_of(prepared)
    model.eval()  # evaluation hides every image token: the image cannot change the prediction
    before = model(batch).outputs["impute_image"][:, 0]
    changed = replace(batch, inputs={**batch.inputs, "image": batch.inputs["image"] * 5})
    torch.testing.assert_close(before, model(changed).outputs["impute_image"][:, 0])
    model.train()  # training hides about half of them: the visible half is read
    torch.manual_seed(0)
    first = model(batch).outputs["impute_image"][:, 0]
    torch.manual_seed(0)
    assert not torch.allclose(first, model(changed).outputs["impute_image"][:, 0])
    tokens = model.encode(batch)["image"]
    torch.manual_seed(0)
    kept = mask_tokens(tokens, 0.5).mask.float().mean() / tokens.mask.float().mean()
    assert 0.4 < kept.item() < 0.6


def test_single_modality_baselines_drop_the_reconstruction_they_cannot_run(world: Path):
    tasks = {
        "scene": {"type": "classification", "target": "scene_class"},
        "impute_image": {"type": "reconstruction", "modality": "image"},
    }
    config = with_tasks(world, tasks)
    config["train"]["epochs"] = 1
    prepared = prepare(parse_config(config), progress=False)
    for alone in ("audio", "image"):  # reading no image, and having nothing to impute it from
        trained = train(prepared, modalities=[alone], progress=False)
        assert sorted(trained.metrics) == ["scene"]
    both = train(prepared, modalities=["audio", "image"], progress=False)
    assert sorted(both.metrics) == ["impute_image", "scene"]
