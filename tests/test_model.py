"""The whole model on the tiny world: absent inputs are inert, save and load round-trip."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError

from omnifuse.config import ModelConfig, RunConfig, parse_config
from omnifuse.errors import OmnifuseError
from omnifuse.model import OmnifuseModel, drop_modalities
from omnifuse.registry import list_fusions
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


# ----------------------------------------------------------------------- every fusion, whole model

FUSIONS = [
    {"type": name, **({"modality": "image"} if name == "unimodal" else {})}
    for name in list_fusions()
]


def with_fusion(prepared: Prepared, fusion: dict[str, Any], **model: Any) -> RunConfig:
    data = prepared.config.model_dump(mode="json")
    data["model"] |= {"fusion": fusion, **model}
    return parse_config(data)


@pytest.mark.parametrize("fusion", FUSIONS, ids=[f["type"] for f in FUSIONS])
def test_every_fusion_in_the_model(prepared: Prepared, fusion: dict[str, Any], tmp_path: Path):
    torch.manual_seed(0)
    model = OmnifuseModel.build(with_fusion(prepared, fusion)).eval()
    batch = prepared.collate(prepared.splits["train"][:8])
    batch.present["audio"][:4] = False
    batch.present["image"][2:6] = False
    for name in batch.present:  # sample 7 has nothing at all
        batch.present[name][7] = False
    before = model(batch)
    batch.inputs["audio"][:4] = torch.randn_like(batch.inputs["audio"][:4]) * 50
    batch.inputs["image"][2:6] = torch.randn_like(batch.inputs["image"][2:6]) * 50
    after = model(batch)
    for name in before.outputs:
        assert torch.isfinite(before.outputs[name]).all()
        torch.testing.assert_close(before.outputs[name], after.outputs[name])
    model.save_pretrained(tmp_path)
    loaded = OmnifuseModel.from_pretrained(tmp_path)
    for name, value in loaded(batch).outputs.items():
        torch.testing.assert_close(value, after.outputs[name], rtol=0, atol=0)


def test_late_fusion_decodes_each_modality_alone(prepared: Prepared):
    """The model's prediction is the mean of the predictions made from each modality alone."""
    torch.manual_seed(0)
    config = with_fusion(prepared, {"type": "late", "combine": "mean"})
    model = OmnifuseModel.build(config).eval()
    samples = prepared.splits["train"]
    complete = [s for s in samples if all(v is not None for v in s.inputs.values())]
    batch = prepared.collate(complete[:8])
    combined = model(batch).outputs["scene"]
    alone = []
    for keep in sorted(batch.present):
        only = {name: torch.full_like(p, name == keep) for name, p in batch.present.items()}
        alone.append(model(replace(batch, present=only)).outputs["scene"])
    torch.testing.assert_close(combined, torch.stack(alone).mean(0))


# ----------------------------------------------------------------------- modality dropout


def presence(samples: int, modalities: int = 4, seed: int = 123) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    flags = torch.rand(samples, modalities, generator=g) < 0.9
    flags[:, 0] |= ~flags.any(1)  # every sample has at least one modality
    return {f"m{i}": flags[:, i] for i in range(modalities)}


def test_modality_dropout_rate_zero_changes_nothing():
    present = presence(100)
    state = torch.get_rng_state()
    assert drop_modalities(present, 0.0) is present
    assert torch.equal(torch.get_rng_state(), state)  # draws nothing


def test_modality_dropout_drops_about_the_rate_never_all_never_adds():
    present = presence(20_000)
    torch.manual_seed(0)
    dropped = drop_modalities(present, 0.3)
    before = torch.stack(list(present.values()), 1)
    after = torch.stack([dropped[n] for n in present], 1)
    assert not (after & ~before).any()  # only present modalities are dropped
    assert after.any(1).all()  # every sample keeps at least one
    fraction = 1 - after.sum().item() / before.sum().item()
    assert 0.27 < fraction < 0.3  # a little under 0.3: the last one present is kept
    torch.manual_seed(0)
    again = drop_modalities(present, 0.3)
    assert all(torch.equal(again[n], dropped[n]) for n in present)  # seeded by torch


def test_modality_dropout_keeps_the_only_modality():
    only = {"a": torch.ones(500, dtype=torch.bool), "b": torch.zeros(500, dtype=torch.bool)}
    torch.manual_seed(0)
    dropped = drop_modalities(only, 0.9)
    assert dropped["a"].all() and not dropped["b"].any()


def test_modality_dropout_acts_in_training_only(prepared: Prepared):
    torch.manual_seed(0)
    model = OmnifuseModel.build(with_fusion(prepared, {"type": "perceiver"}, modality_dropout=0.5))
    batch = prepared.collate(prepared.splits["train"][:32])
    model.eval()
    output = model(batch)
    assert all(torch.equal(output.present[n], batch.present[n]) for n in batch.present)
    model.train()
    output = model(batch)
    seen = torch.stack([output.present[n] for n in sorted(batch.present)], 1)
    given = torch.stack([batch.present[n] for n in sorted(batch.present)], 1)
    assert seen.sum() < given.sum() and seen.any(1).all()
    assert not (output.tokens["audio"].mask & ~output.present["audio"][:, None]).any()
    losses = model.training_forward(batch)
    assert torch.isfinite(losses["loss"])


def test_modality_dropout_is_validated():
    with pytest.raises(ValidationError):
        ModelConfig(tasks={"t": {"type": "classification", "target": "y"}}, modality_dropout=1.0)


def test_the_order_of_tasks_in_the_config_does_not_change_the_model(world: Path):
    data = tiny_config(world)
    reversed_data = {
        **data,
        "model": {**data["model"], "tasks": dict(reversed(data["model"]["tasks"].items()))},
    }
    models = []
    for variant in (data, reversed_data):
        torch.manual_seed(0)
        models.append(OmnifuseModel.build(parse_config(variant)))
    first, second = (m.state_dict() for m in models)
    assert list(first) == list(second)
    assert all(torch.equal(first[k], second[k]) for k in first)
