"""Preprocessed shards: written once by `omnifuse data shard`, they train a model to exactly
the metrics of reading the manifest, and refuse preprocessing that differs from theirs."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet
import pytest
import torch
import yaml
from click.testing import CliRunner

from omnifuse.cli import cli
from omnifuse.config import parse_config
from omnifuse.data.shards import ShardSamples, open_shards
from omnifuse.errors import ConfigError, DataError
from omnifuse.inference import evaluate_saved
from omnifuse.model import OmnifuseModel
from omnifuse.train.run import prepare, run
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def shards(world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("shards")
    config = folder / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_config(world, epochs=2)))
    out = folder / "shards"
    arguments = ["data", "shard", str(world), "--config", str(config), "--out", str(out)]
    result = CliRunner().invoke(cli, [*arguments, "--rows-per-shard", "50"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["skipped"] == 0
    return out


def from_shards(shards: Path, **edits: object):
    data = tiny_config(Path("unused"), epochs=2)
    data["data"] = {"shards": str(shards)}
    data["modalities"]["image"] |= edits
    return parse_config(data)


def test_shards_hold_every_split_in_arrow_files(shards: Path, world: Path):
    meta = json.loads((shards / "shards.json").read_text())
    assert meta["manifest"] == str(world.resolve())
    assert sum(len(s["rows"]) for s in meta["splits"].values()) == 160
    train = meta["splits"]["train"]
    assert len(train["files"]) == -(-len(train["rows"]) // 50)  # 50 rows a file
    with pa.ipc.open_file(str(shards / train["files"][0])) as reader:
        table = reader.read_all()
    assert {"row", "id", "input.image", "shape.image", "target.scene"} <= set(table.column_names)


def test_training_from_shards_gives_the_manifest_metrics(world: Path, shards: Path, tmp_path: Path):
    direct = run(parse_config(tiny_config(world, epochs=2)), tmp_path / "direct", progress=False)
    sharded = run(from_shards(shards), tmp_path / "sharded", progress=False)
    assert sharded["tasks"] == direct["tasks"]
    assert sharded["splits"] == direct["splits"]
    # the saved model evaluates on the shards it was trained from
    saved = OmnifuseModel.from_pretrained(tmp_path / "sharded")
    assert evaluate_saved(saved)["tasks"] == sharded["tasks"]


def test_samples_read_from_shards_are_the_loaded_ones(world: Path, shards: Path):
    loaded = prepare(parse_config(tiny_config(world)), progress=False)
    read = prepare(from_shards(shards), progress=False)
    assert isinstance(read.splits["val"].loaded, ShardSamples)
    for ours, theirs in zip(read.splits["val"], loaded.splits["val"], strict=True):
        assert ours.id == theirs.id
        for group, values in (("inputs", theirs.inputs), ("targets", theirs.targets)):
            for name, value in values.items():
                mine = getattr(ours, group)[name]
                if value is None:
                    assert mine is None
                else:  # bit for bit (a tabular gap is NaN)
                    torch.testing.assert_close(mine, value, rtol=0, atol=0, equal_nan=True)


def test_other_preprocessing_than_the_shards_is_refused(shards: Path):
    with pytest.raises(ConfigError, match=r"^modalities\.image: not as the shards in .* were"):
        prepare(from_shards(shards, size=16), progress=False)


def test_a_damaged_shard_or_folder_is_one_line(shards: Path, tmp_path: Path):
    with pytest.raises(DataError, match=r"no shards\.json; not a folder of omnifuse shards"):
        open_shards(from_shards(tmp_path))
    broken = tmp_path / "broken"
    broken.mkdir()
    for path in shards.iterdir():
        (broken / path.name).write_bytes(path.read_bytes())
    first = json.loads((broken / "shards.json").read_text())["splits"]["train"]["files"][0]
    (broken / first).write_bytes(b"not arrow")
    with pytest.raises(DataError, match=rf"{first}: cannot read the shard"):
        open_shards(from_shards(broken))


def test_bad_rows_stop_sharding_or_are_listed(world: Path, tmp_path: Path):
    table = pa.parquet.read_table(world).to_pylist()
    table[5]["image"] = "images/absent.png"
    manifest = world.parent / "shard-bad.parquet"
    pa.parquet.write_table(pa.Table.from_pylist(table), manifest)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_config(world)))
    arguments = ["data", "shard", str(manifest), "--config", str(config), "--out"]
    refused = CliRunner().invoke(cli, [*arguments, str(tmp_path / "a")])
    assert refused.exit_code == 1
    assert "row 6 (id 000005), column 'image': file not found" in refused.output
    assert not (tmp_path / "a").exists() and not (tmp_path / ".a.partial").exists()
    listed = CliRunner().invoke(cli, [*arguments, str(tmp_path / "b"), "--skip-bad"])
    assert listed.exit_code == 0, listed.output
    meta = json.loads((tmp_path / "b" / "shards.json").read_text())
    assert [r["row"] for r in meta["skipped"]] == [6]
    assert 5 not in meta["splits"]["train"]["rows"] + meta["splits"]["val"]["rows"]
