"""A whole model with pretrained encoders on the tiny world: training, absent inputs, save/load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from omnifuse.config import TrainConfig, parse_config
from omnifuse.model import OmnifuseModel
from omnifuse.pretrained.encoder import PretrainedEncoder
from omnifuse.train.loop import fit
from omnifuse.train.run import Prepared, prepare
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def prepared(world: Path, bert_dir: Path, vit_dir: Path, wav2vec2_dir: Path) -> Prepared:
    config = tiny_config(world)
    modalities = config["modalities"]
    modalities["image"].update(
        normalize="imagenet", encoder={"type": "image_hf", "path": str(vit_dir)}
    )
    modalities["text"]["encoder"] = {"type": "text_hf", "path": str(bert_dir), "train": 1}
    modalities["audio"] = {
        "kind": "audio",
        "features": "waveform",
        "max_seconds": 0.25,
        "encoder": {"type": "audio_hf", "path": str(wav2vec2_dir)},
    }
    return prepare(parse_config(config), progress=False)


def test_training_updates_the_trainable_parts_only(prepared: Prepared):
    torch.manual_seed(0)
    model = OmnifuseModel.build(prepared.config)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = TrainConfig(epochs=1, batch_size=32, lr=3e-3)
    history = fit(
        model, prepared.splits["train"][:64], config, collate=prepared.collate, progress=False
    )
    assert all(torch.isfinite(torch.tensor(step["loss"])) for step in history.steps)
    after = model.state_dict()
    assert torch.equal(
        before["encoders.image.backbone.model.embeddings.cls_token"],
        after["encoders.image.backbone.model.embeddings.cls_token"],
    )
    assert torch.equal(
        before["encoders.text.backbone.model.encoder.layer.0.output.dense.weight"],
        after["encoders.text.backbone.model.encoder.layer.0.output.dense.weight"],
    )
    assert not torch.equal(
        before["encoders.text.backbone.model.encoder.layer.1.output.dense.weight"],
        after["encoders.text.backbone.model.encoder.layer.1.output.dense.weight"],
    )
    assert not torch.equal(
        before["encoders.image.project.1.weight"], after["encoders.image.project.1.weight"]
    )
    image, audio = model.encoders["image"], model.encoders["audio"]
    assert isinstance(image, PretrainedEncoder) and isinstance(audio, PretrainedEncoder)
    assert len(image.cache) > 0 and len(audio.cache) > 0  # frozen: cached what they saw


def test_absent_inputs_give_finite_outputs_and_cannot_change_them(prepared: Prepared):
    model = OmnifuseModel.build(prepared.config).eval()
    batch = prepared.collate(prepared.splits["train"][:6])
    for name in batch.present:
        batch.present[name][0] = False
        batch.lengths[name][0] = 0
    before = model(batch)
    assert all(torch.isfinite(v).all() for v in before.outputs.values())
    batch.inputs["image"][0] = torch.randn_like(batch.inputs["image"][0]) * 50
    after = model(batch)
    for name, value in before.outputs.items():
        torch.testing.assert_close(value, after.outputs[name])


def test_save_and_load_give_identical_outputs(prepared: Prepared, tmp_path: Path):
    torch.manual_seed(1)
    model = OmnifuseModel.build(prepared.config).eval()
    model.save_pretrained(tmp_path)
    loaded = OmnifuseModel.from_pretrained(tmp_path)
    batch = prepared.collate(prepared.splits["test"][:8])
    expected = model(batch)
    got = loaded(batch)
    for name, value in expected.outputs.items():
        torch.testing.assert_close(value, got.outputs[name], rtol=0, atol=0)
    for name, value in expected.embeddings.items():
        torch.testing.assert_close(value, got.embeddings[name], rtol=0, atol=0)
