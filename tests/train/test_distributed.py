"""Training on several processes with torch.distributed (gloo, on the CPU): each rank's share
of a global batch gives, through DDP, the single-process gradients; `omnifuse train --nproc 2`
(torchrun) follows the single-process loss curve and metrics; a 2-process run killed with
SIGKILL mid-epoch resumes to the metrics of an uninterrupted one."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml
from safetensors.torch import load_file, save_file

from omnifuse.config import parse_config
from omnifuse.model import OmnifuseModel
from omnifuse.train import distributed
from omnifuse.train.run import Prepared, prepare
from tests.conftest import tiny_config
from tests.train.test_checkpoint import checkpoint_step

TASKS = {
    "classification": {"scene": {"type": "classification", "target": "scene_class"}},
    "alignment": {"retrieval": {"type": "alignment", "between": ["image", "text"]}},
}
GLOBAL_BATCH = 16
TOLERANCE = 1e-5  # absolute, on gradients of order 1e-2 to 1: float32 summation order

pytestmark = pytest.mark.skipif(
    not dist.is_available() or "fork" not in mp.get_all_start_methods(),
    reason="needs torch.distributed (gloo) and fork",
)


def gradients(prepared: Prepared, rows: list[int]) -> dict[str, torch.Tensor]:
    """The gradients of one training step on samples `rows`: this process's share of them
    under torch.distributed (averaged over ranks by DDP), all of them otherwise."""
    torch.manual_seed(0)
    model = OmnifuseModel.build(prepared.config).train()
    share = distributed.share(rows, len(rows))
    batch = prepared.collate([prepared.splits["train"][i] for i in share])
    step = distributed.engine(model)  # kept: DDP's backward hooks need it alive
    losses = step(batch)
    losses["loss"].backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _rank(rank: int, folder: str, prepared: Prepared) -> None:
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=2)
    try:
        found = gradients(prepared, list(range(GLOBAL_BATCH)))
        if rank == 0:
            save_file(found, f"{folder}/gradients.safetensors")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("kind", sorted(TASKS))
def test_two_ranks_give_the_gradients_of_the_global_batch(world: Path, tmp_path: Path, kind: str):
    data = tiny_config(world)
    data["model"]["tasks"] = TASKS[kind]
    prepared = prepare(parse_config(data), progress=False)
    alone = gradients(prepared, list(range(GLOBAL_BATCH)))
    mp.start_processes(_rank, args=(str(tmp_path), prepared), nprocs=2, start_method="fork")
    shared = load_file(str(tmp_path / "gradients.safetensors"))
    assert sorted(shared) == sorted(alone)
    for name, gradient in alone.items():
        torch.testing.assert_close(shared[name], gradient, atol=TOLERANCE, rtol=1e-4, msg=name)


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (torchrun starts each rank in a session of its own)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def omnifuse(*args: str | Path, **popen: object) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "omnifuse", *map(str, args)]
    return subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **popen
    )


def finished(process: subprocess.Popen[bytes]) -> None:
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr.decode()[-2000:]


def losses(out: Path) -> list[float]:
    with (out / "steps.csv").open() as file:
        return [float(row["loss"]) for row in csv.DictReader(file)]


def tasks(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())["tasks"]


def test_two_processes_follow_the_single_process_curve(world: Path, tmp_path: Path):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_config(world, epochs=3)))
    finished(omnifuse("train", config, "--out", tmp_path / "one"))
    finished(omnifuse("train", config, "--out", tmp_path / "two", "--nproc", "2"))
    one, two = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert len(one) == len(two) == 12
    assert two == pytest.approx(one, rel=1e-4)
    for task, metrics in tasks(tmp_path / "one").items():
        assert tasks(tmp_path / "two")[task] == pytest.approx(metrics, abs=1e-4)
    # rank 0 alone wrote the run: one line per step, one model
    assert (tmp_path / "two" / "model.safetensors").is_file()


def test_a_killed_two_process_run_resumes_to_the_uninterrupted_metrics(world: Path, tmp_path: Path):
    data = tiny_config(world, epochs=30, checkpoint_every=5)
    data["data"] |= {"stream": True, "workers": 1}
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(data))
    finished(omnifuse("train", config, "--out", tmp_path / "reference", "--nproc", "2"))

    out = tmp_path / "killed"
    process = omnifuse("train", config, "--out", out, "--nproc", "2")
    deadline = time.monotonic() + 180
    while checkpoint_step(out / "checkpoint.safetensors") < 30 and time.monotonic() < deadline:
        assert process.poll() is None, "the run ended before it could be killed"
        time.sleep(0.02)
    for pid in [process.pid, *descendants(process.pid)]:  # torchrun, its ranks, their workers
        os.kill(pid, signal.SIGKILL)
    process.wait()
    killed_at = checkpoint_step(out / "checkpoint.safetensors")
    assert 30 <= killed_at < 120 and not (out / "metrics.json").exists()

    finished(omnifuse("train", config, "--out", out, "--nproc", "2", "--resume"))
    assert tasks(out) == tasks(tmp_path / "reference")
    with (out / "steps.csv").open() as file:
        assert [int(row["step"]) for row in csv.DictReader(file)] == list(range(1, 121))
