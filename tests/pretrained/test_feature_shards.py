"""Shards of frozen backbones' features (`omnifuse data shard --features`): the backbone runs
once, when they are written; training from them never runs it and gives the metrics of
training from the manifest; features of other weights are refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml
from click.testing import CliRunner

from omnifuse.cli import cli
from omnifuse.config import parse_config
from omnifuse.errors import ConfigError
from omnifuse.inference import evaluate_saved
from omnifuse.model import OmnifuseModel
from omnifuse.pretrained.encoder import PretrainedEncoder
from omnifuse.train.run import prepare, run
from tests.conftest import tiny_config


def pretrained_config(world: Path, vit_dir: Path, bert_dir: Path, text_train: Any) -> dict:
    """The tiny config with a frozen ViT for images and a BERT for texts."""
    config = tiny_config(world, epochs=2)
    config["modalities"]["image"].update(
        normalize="imagenet", encoder={"type": "image_hf", "path": str(vit_dir)}
    )
    config["modalities"]["text"]["encoder"] = {
        "type": "text_hf",
        "path": str(bert_dir),
        "train": text_train,
        "cache": False,  # the in-memory cache would skip the backbone in later epochs too
    }
    config["modalities"]["image"]["encoder"]["cache"] = False
    return config


def shard(manifest: Path, config: dict, out: Path, *flags: str) -> Any:
    source = out.parent / f"{out.name}.yaml"
    source.write_text(yaml.safe_dump(config))
    arguments = ["data", "shard", str(manifest), "--config", str(source), "--out", str(out)]
    return CliRunner().invoke(cli, [*arguments, *flags])


@pytest.fixture(scope="module")
def features(
    world: Path, vit_dir: Path, bert_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("features") / "shards"
    result = shard(world, pretrained_config(world, vit_dir, bert_dir, "none"), out, "--features")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["features"] == ["image", "text"]
    return out


def from_shards(folder: Path, vit_dir: Path, bert_dir: Path) -> dict:
    config = pretrained_config(Path("unused"), vit_dir, bert_dir, "none")
    config["data"] = {"shards": str(folder)}
    return config


def test_the_shards_hold_backbone_tokens_not_inputs(features: Path):
    meta = json.loads((features / "shards.json").read_text())
    assert {name: f["width"] for name, f in meta["features"].items()} == {"image": 32, "text": 32}
    with pa.ipc.open_file(str(features / meta["splits"]["train"]["files"][0])) as reader:
        table = reader.read_all()
    shapes = [s for s in table.column("shape.image").to_pylist() if s is not None]
    # (width, tokens): a 32 x 32 image in 8 x 8 patches is 16 patch tokens and one CLS token
    assert shapes and all(s == [32, 17] for s in shapes)
    text = [s for s in table.column("shape.text").to_pylist() if s is not None]
    assert text and all(s[0] == 32 for s in text) and len({s[1] for s in text}) > 1


def test_training_from_features_never_runs_the_backbones_and_gives_the_manifest_metrics(
    world: Path,
    features: Path,
    vit_dir: Path,
    bert_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    config = pretrained_config(world, vit_dir, bert_dir, "none")
    direct = run(parse_config(config), tmp_path / "direct", progress=False)

    def no_backbone(*args: object) -> None:
        raise AssertionError("a backbone ran")

    monkeypatch.setattr(PretrainedEncoder, "_run", no_backbone)
    sharded = run(parse_config(from_shards(features, vit_dir, bert_dir)), tmp_path / "sharded")
    assert sharded["splits"] == direct["splits"]
    for task, metrics in direct["tasks"].items():  # the backbones saw other batches: float
        assert sharded["tasks"][task] == pytest.approx(metrics, rel=1e-4, abs=1e-5), task
    saved = OmnifuseModel.from_pretrained(tmp_path / "sharded")
    assert evaluate_saved(saved)["tasks"] == sharded["tasks"]
    with pytest.raises(ConfigError, match=r"^--zero-shot: the shards hold text's backbone"):
        evaluate_saved(saved, zero_shot="scene_class")


def test_only_frozen_backbones_are_stored_as_features(
    world: Path, vit_dir: Path, bert_dir: Path, tmp_path: Path
):
    trained_text = pretrained_config(world, vit_dir, bert_dir, 1)
    result = shard(world, trained_text, tmp_path / "image-only", "--features")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["features"] == ["image"]
    result = shard(world, tiny_config(world), tmp_path / "none", "--features")
    assert result.exit_code != 0
    assert result.output.strip().splitlines() == [
        "Error: --features: no modality has a frozen pretrained encoder (a pretrained encoder "
        "with train: none), whose features could be stored"
    ]


def test_features_of_other_weights_are_refused(
    features: Path, vit_dir: Path, bert_dir: Path, tmp_path: Path
):
    other = tmp_path / "other"
    other.mkdir()
    for path in features.iterdir():
        (other / path.name).write_bytes(path.read_bytes())
    meta = json.loads((other / "shards.json").read_text())
    meta["features"]["image"]["backbone"] = "0" * 16
    (other / "shards.json").write_text(json.dumps(meta))
    prepared = prepare(parse_config(from_shards(other, vit_dir, bert_dir)), progress=False)
    with pytest.raises(ConfigError, match=r"^modalities\.image\.encoder: the shards hold features"):
        run(prepared.config, tmp_path / "run", progress=False)
