"""`train.device`: what auto picks, the errors for a device that is not there, batches moved
whole to the model's device, and (where torch sees a GPU) training on CUDA giving the CPU's
metrics."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from omnifuse.config import parse_config
from omnifuse.errors import ConfigError
from omnifuse.train.distributed import device
from omnifuse.train.run import prepare, train
from tests.conftest import tiny_config

CUDA = torch.cuda.is_available()


def test_cpu_is_the_cpu_and_auto_takes_what_is_there():
    assert device("cpu") == torch.device("cpu")
    expected = "cuda" if CUDA else "mps" if torch.backends.mps.is_available() else "cpu"
    assert device("auto").type == expected


@pytest.mark.skipif(CUDA, reason="this machine has a CUDA GPU")
def test_cuda_without_a_gpu_says_so():
    with pytest.raises(ConfigError, match=r"train.device: cuda, but this torch .* sees no CUDA"):
        device("cuda")


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has an Apple GPU")
def test_mps_without_one_says_so():
    with pytest.raises(ConfigError, match=r"train\.device: mps, but torch sees no Apple GPU"):
        device("mps")


def test_an_unknown_device_is_a_config_error(world: Path):
    data = tiny_config(world)
    data["train"]["device"] = "gpu"
    with pytest.raises(ConfigError, match=r"train\.device"):
        parse_config(data)


def test_a_batch_moves_whole(world: Path):
    config = parse_config(tiny_config(world))
    prepared = prepare(config, progress=False)
    batch = prepared.collate([prepared.splits["train"][i] for i in range(4)])
    assert batch.to(torch.device("cpu")) is batch  # already there: nothing copied
    moved = batch.to(torch.device("meta"))
    tables = (moved.inputs, moved.lengths, moved.present, moved.targets, moved.labelled)
    assert all(t.is_meta for table in tables for t in table.values())
    assert moved.ids == batch.ids
    assert set(moved.inputs) == set(batch.inputs) and set(moved.targets) == set(batch.targets)


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (run on the GPU machine)")
def test_training_on_cuda_gives_the_cpu_metrics(world: Path):
    metrics = {}
    for where in ("cpu", "cuda"):
        config = parse_config(tiny_config(world, epochs=2, device=where))
        trained = train(prepare(config, progress=False), progress=False)
        assert trained.compute["device"].startswith(where)
        metrics[where] = trained.metrics
    for task, values in metrics["cpu"].items():
        for key, value in values.items():  # different kernels: close, not equal
            assert metrics["cuda"][task][key] == pytest.approx(value, abs=0.05), (task, key)
