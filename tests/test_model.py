"""The whole model on the tiny world: absent inputs are inert, save and load round-trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from omnifuse.config import parse_config
from omnifuse.errors import OmnifuseError
from omnifuse.model import OmnifuseModel
from omnifuse.train.run import Prepared, prepare
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def prepared(world: Path) -> Prepared:
    return prepare(parse_config(tiny_config(world)), progress=False)


def test_fitted_config_holds_the_statistics(prepared: Prepared):
    config = prepared.config
    assert config.model.tasks["scene"].options["classes"] == [str(i) for i in range(12)]
    assert config.modalities["tabular"].categories["venue"] == ["harbour", "market"]
    assert len(config.modalities["image"].mean) == 3
    assert config.model.tasks["score"].options["std"] > 0


def test_absent_modality_content_cannot_change_the_output(prepared: Prepared):
    torch.manual_seed(0)
    model = OmnifuseModel.build(prepared.config).eval()
    batch = prepared.collate(prepared.splits["train"][:8])
    batch.present["audio"][:4] = False
    batch.present["image"][2:6] = False
    before = model(batch)
    batch.inputs["audio"][:4] = torch.randn_like(batch.inputs["audio"][:4]) * 50
    batch.inputs["image"][2:6] = torch.randn_like(batch.inputs["image"][2:6]) * 50
    after = model(batch)
    for name in before.outputs:
        torch.testing.assert_close(before.outputs[name], after.outputs[name])


def test_a_sample_with_no_modality_gives_finite_outputs(prepared: Prepared):
    model = OmnifuseModel.build(prepared.config).eval()
    batch = prepared.collate(prepared.splits["train"][:4])
    for name in batch.present:
        batch.present[name][0] = False
    output = model(batch)
    assert all(torch.isfinite(v).all() for v in output.outputs.values())


def test_save_and_load_give_identical_outputs(prepared: Prepared, tmp_path: Path):
    model = OmnifuseModel.build(prepared.config).eval()
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    loaded = OmnifuseModel.from_pretrained(tmp_path)
    batch = prepared.collate(prepared.splits["test"][:8])
    for name, value in model(batch).outputs.items():
        torch.testing.assert_close(value, loaded(batch).outputs[name], rtol=0, atol=0)


def test_loading_a_folder_without_a_model_is_a_clear_error(tmp_path: Path):
    with pytest.raises(OmnifuseError, match=r"no config\.json; not a saved omnifuse model"):
        OmnifuseModel.from_pretrained(tmp_path)
