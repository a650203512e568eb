"""Image generation from the fused tokens: guidance, seeds, absent conditions, the frozen
tokenizer it loads, and the image tokenizer task's metrics."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from omnifuse.config import parse_config
from omnifuse.errors import ConfigError, OmnifuseError
from omnifuse.eval.imagegen import generate_images, image_task
from omnifuse.model import OmnifuseModel
from omnifuse.tasks.image_generation import load_tokenizer
from omnifuse.train.run import prepare
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def model(image_generator: Path) -> OmnifuseModel:
    return OmnifuseModel.from_pretrained(image_generator)


@pytest.fixture(scope="module")
def samples(model: OmnifuseModel) -> list:
    return prepare(model.config, progress=False).splits["val"][:4]


def test_guidance_zero_is_unconditional_sampling(model: OmnifuseModel, samples: list):
    """Guidance 0 samples the model with every condition hidden: the same images as the
    conditional model (guidance 1) given samples that have no condition at all."""
    unguided = generate_images(model, samples, guidance=0.0)
    nothing = [replace(s, inputs=dict.fromkeys(s.inputs)) for s in samples]  # all absent
    torch.testing.assert_close(unguided, generate_images(model, nothing, guidance=1.0))
    assert not torch.equal(unguided, generate_images(model, samples, guidance=1.0))


def test_the_same_seed_gives_the_same_images(model: OmnifuseModel, samples: list):
    first = generate_images(model, samples, seed=3, temperature=1.0)
    assert first.shape == (4, 3, 32, 32) and first.min() >= 0 and first.max() <= 1
    torch.testing.assert_close(first, generate_images(model, samples, seed=3, temperature=1.0))
    assert not torch.equal(first, generate_images(model, samples, seed=4, temperature=1.0))
    assert image_task(model).sampling.seed == 0  # the task's own settings are restored


def test_an_absent_condition_is_masked_whatever_its_content(model: OmnifuseModel, samples):
    batch = prepare(model.config, progress=False).collate(samples)
    batch.present["text"][:] = False
    before = model(batch).outputs["picture"]
    batch.inputs["text"] = torch.randint_like(batch.inputs["text"], 1, 200)
    torch.testing.assert_close(before, model(batch).outputs["picture"])


@pytest.mark.parametrize("decoding", ["parallel", "autoregressive"])
def test_both_decodings_train_and_generate(world: Path, image_tokenizer: Path, decoding: str):
    config = tiny_config(world)
    config["model"]["tasks"] = {
        "picture": {
            "type": "image_generation",
            "modality": "image",
            "tokenizer": str(image_tokenizer),
            "decoding": decoding,
            "depth": 1,
            "steps": 3,
            "condition_dropout": 0.5,
        }
    }
    prepared = prepare(parse_config(config), progress=False)
    torch.manual_seed(0)
    model = OmnifuseModel.build(prepared.config).train()
    batch = prepared.collate(prepared.splits["train"][:8])
    loss = model.training_forward(batch)["loss/picture"]
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert model.tasks["picture"].transformer.out.weight.grad is not None
    assert all(p.grad is None for p in image_task(model).frozen[0].parameters())
    codes = model.eval()(batch).outputs["picture"]
    assert codes.shape == (8, 2, 64) and codes[:, 0].max() < 125


def test_the_tokenizer_is_not_in_the_models_weights(model: OmnifuseModel):
    assert not any("frozen" in key or "tokenizer" in key for key in model.state_dict())


def copy(folder: Path, tmp_path: Path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(folder, out)
    return out


def test_a_missing_or_damaged_tokenizer_is_one_line(image_tokenizer: Path, tmp_path: Path):
    with pytest.raises(OmnifuseError, match="no such folder"):
        load_tokenizer(tmp_path / "nowhere", "model.tasks.picture.tokenizer")
    damaged = copy(image_tokenizer, tmp_path)
    weights = damaged / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(OmnifuseError, match=r"model\.safetensors is not readable") as error:
        load_tokenizer(damaged, "model.tasks.picture.tokenizer")
    assert "\n" not in str(error.value)
    (damaged / "config.json").write_text("{not json")
    with pytest.raises(OmnifuseError, match=r"config\.json is not valid JSON"):
        load_tokenizer(damaged, "model.tasks.picture.tokenizer")


def test_a_model_without_a_tokenizer_task_is_refused(image_generator: Path):
    with pytest.raises(OmnifuseError, match="0 image_tokenizer tasks"):
        load_tokenizer(image_generator, "model.tasks.picture.tokenizer")


def test_an_image_size_the_tokenizer_does_not_read_is_refused(world, image_tokenizer: Path):
    config = tiny_config(world)
    config["modalities"]["image"]["size"] = 16
    config["model"]["tasks"] = {
        "picture": {
            "type": "image_generation",
            "modality": "image",
            "tokenizer": str(image_tokenizer),
        }
    }
    with pytest.raises(ConfigError, match="it reads 32x32 images"):
        OmnifuseModel.build(prepare(parse_config(config), progress=False).config)


def test_the_tokenizer_reports_reconstruction_and_codebook_usage(image_tokenizer: Path):
    metrics = json.loads((image_tokenizer / "metrics.json").read_text())["tasks"]["tokenizer"]
    assert set(metrics) == {"psnr", "ssim", "perplexity", "codes_used"}
    assert metrics["psnr"] > 8 and 0 < metrics["codes_used"] <= 1 and metrics["perplexity"] >= 1
