"""Self-supervised pre-training, then fine-tuning from it on a fraction of the training rows."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from omnifuse.config import parse_config
from omnifuse.errors import ConfigError, OmnifuseError
from omnifuse.model import OmnifuseModel
from omnifuse.train.run import prepare, run, train
from tests.conftest import tiny_config


def pretrain_config(world: Path) -> dict:
    config = tiny_config(world, epochs=1)
    config["modalities"]["text"]["tokenizer"] = "bpe"  # fitted: must be reused when fine-tuning
    config["modalities"]["text"]["vocab_size"] = 300
    config["model"]["tasks"] = {
        "retrieval": config["model"]["tasks"]["retrieval"],
        "impute_image": {"type": "reconstruction", "modality": "image"},
    }
    return config


def test_train_fraction_keeps_a_seeded_subset_of_the_training_split(world: Path):
    full = prepare(parse_config(tiny_config(world)), progress=False)
    config = tiny_config(world)
    config["data"]["train_fraction"] = 0.1
    few = prepare(parse_config(config), progress=False)
    assert len(few.rows["train"]) == round(0.1 * len(full.rows["train"]))
    assert set(few.rows["train"]) < set(full.rows["train"])
    assert [s.id for s in few.splits["train"]] == [
        s.id for s in full.splits["train"] if s.id in {f.id for f in few.splits["train"]}
    ]
    assert few.rows["val"] == full.rows["val"] and few.rows["test"] == full.rows["test"]
    # fitted on the whole training split all the same
    assert few.config.model.tasks["scene"].options["classes"] == [str(i) for i in range(12)]
    assert few.config.modalities["image"].mean == full.config.modalities["image"].mean


def test_fine_tuning_starts_from_the_pretrained_weights_and_preprocessing(
    world: Path, tmp_path: Path
):
    pretrained = tmp_path / "pretrained"
    run(parse_config(pretrain_config(world)), pretrained, progress=False)
    saved = OmnifuseModel.from_pretrained(pretrained)

    config = tiny_config(world, epochs=1, init=str(pretrained))
    config["modalities"]["text"]["tokenizer"] = "bpe"
    config["modalities"]["text"]["vocab_size"] = 300
    config["data"]["train_fraction"] = 0.25
    prepared = prepare(parse_config(config), progress=False)
    for name in ("image", "text", "tabular"):  # fitted on all rows before, not refitted
        assert prepared.config.modalities[name] == saved.config.modalities[name]

    # the weights a fine-tuning run starts from: build as `train` does, before any step
    model = OmnifuseModel.build(prepared.config)
    loaded = model.load_matching(pretrained)
    weights = load_file(str(pretrained / "model.safetensors"))
    assert any(k.startswith("encoders.text.") for k in loaded)
    assert any(k.startswith("fusion.") for k in loaded)
    assert not any(k.startswith("tasks.scene.") for k in loaded)  # new head, new weights
    state = model.state_dict()
    for key in loaded:
        torch.testing.assert_close(state[key], weights[key])
    trained = train(prepared, progress=False)
    assert set(trained.metrics) == {"retrieval", "scene", "score"}

    # only some parts: a top-level module, or a dotted path inside one
    only = OmnifuseModel.build(prepared.config).load_matching(pretrained, ["encoders.text"])
    assert only and all(k.startswith("encoders.text.") for k in only)
    with pytest.raises(ConfigError, match="no part 'fusoin' \\(did you mean 'fusion'\\?\\)"):
        model.load_matching(pretrained, ["fusoin"])


def test_init_from_a_folder_without_a_model_is_a_clear_error(world: Path, tmp_path: Path):
    config = tiny_config(world, init=str(tmp_path))
    with pytest.raises(OmnifuseError, match=r"no config\.json; not a saved omnifuse model"):
        prepare(parse_config(config), progress=False)
