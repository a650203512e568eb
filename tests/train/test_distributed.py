"""Training on several processes with torch.distributed (gloo, on the CPU): each rank's share
of a global batch gives, through DDP or FSDP, the single-process gradients; metrics computed
over the ranks' parts are one process's; `omnifuse train --nproc 2` (torchrun) follows the
single-process loss curve and metrics; a 2-process run killed with SIGKILL mid-epoch resumes
to the metrics of an uninterrupted one."""

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
from torch.distributed.tensor import DTensor

from omnifuse.config import parse_config
from omnifuse.eval.evaluate import evaluate
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


def gradients(
    prepared: Prepared, rows: list[int], strategy: str = "ddp"
) -> dict[str, torch.Tensor]:
    """The gradients of one training step on samples `rows`: this process's share of them
    under torch.distributed (averaged over ranks by DDP, or reduced into FSDP's shards and
    gathered whole here), all of them otherwise."""
    torch.manual_seed(0)
    model = OmnifuseModel.build(prepared.config).train()
    share = distributed.share(rows, len(rows))
    batch = prepared.collate([prepared.splits["train"][i] for i in share])
    step = distributed.engine(model, strategy)  # kept: DDP's backward hooks need it alive
    losses = step(batch)
    losses["loss"].backward()
    found = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    if strategy == "fsdp":  # every weight but the scalars is split over the ranks
        assert all(isinstance(g, DTensor) == (g.ndim > 0) for g in found.values())
        encoder = list(model.encoders["image"].parameters())
        assert sum(p.to_local().numel() for p in encoder) < sum(p.numel() for p in encoder)
        found = {n: g.full_tensor() if isinstance(g, DTensor) else g for n, g in found.items()}
    return {n: g.clone() for n, g in found.items()}


def _rank(rank: int, folder: str, prepared: Prepared, strategy: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=2)
    try:
        found = gradients(prepared, list(range(GLOBAL_BATCH)), strategy)
        if rank == 0:
            save_file(found, f"{folder}/gradients.safetensors")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize(
    ("kind", "strategy"),
    [("alignment", "ddp"), ("classification", "ddp"), ("alignment", "fsdp")],
)
def test_two_ranks_give_the_gradients_of_the_global_batch(
    world: Path, tmp_path: Path, kind: str, strategy: str
):
    data = tiny_config(world)
    data["model"]["tasks"] = TASKS[kind]
    prepared = prepare(parse_config(data), progress=False)
    alone = gradients(prepared, list(range(GLOBAL_BATCH)))
    args = (str(tmp_path), prepared, strategy)
    mp.start_processes(_rank, args=args, nprocs=2, start_method="fork")
    shared = load_file(str(tmp_path / "gradients.safetensors"))
    assert sorted(shared) == sorted(alone)
    for name, gradient in alone.items():
        torch.testing.assert_close(shared[name], gradient, atol=TOLERANCE, rtol=1e-4, msg=name)


def _evaluating_rank(rank: int, folder: str, prepared: Prepared, samples: list) -> None:
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        model = OmnifuseModel.build(prepared.config)
        found = evaluate(model, samples, prepared.collate, batch_size=4, across_ranks=True)
        Path(folder, f"metrics-{rank}.json").write_text(json.dumps(found))
    finally:
        dist.destroy_process_group()


def test_metrics_over_two_ranks_are_those_of_one_process(world: Path, tmp_path: Path):
    """Each rank predicts its part of an odd number of samples; the classification,
    regression and retrieval metrics computed from every rank's part are the single
    process's (retrieval ranks each sample among all of them, not among its rank's)."""
    prepared = prepare(parse_config(tiny_config(world)), progress=False)
    samples = [prepared.splits["train"][i] for i in range(23)]
    torch.manual_seed(0)
    model = OmnifuseModel.build(prepared.config)
    alone = evaluate(model, samples, prepared.collate, batch_size=4)
    args = (str(tmp_path), prepared, samples)
    mp.start_processes(_evaluating_rank, args=args, nprocs=2, start_method="fork")
    for rank in (0, 1):
        found = json.loads((tmp_path / f"metrics-{rank}.json").read_text())
        assert sorted(found) == ["retrieval", "scene", "score"]
        for task, metrics in alone.items():
            assert found[task] == pytest.approx(metrics, abs=1e-6), task


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
    """DDP and FSDP alike: the losses and metrics of one process, and (FSDP gathering the
    sharded weights and optimizer state whole) the same checkpoint."""
    for strategy in ("ddp", "fsdp"):
        config = tmp_path / f"{strategy}.yaml"
        config.write_text(yaml.safe_dump(tiny_config(world, epochs=3, strategy=strategy)))
        finished(omnifuse("train", config, "--out", tmp_path / strategy, "--nproc", "2"))
    finished(omnifuse("train", tmp_path / "ddp.yaml", "--out", tmp_path / "one"))
    one = losses(tmp_path / "one")
    assert len(one) == 12
    for strategy in ("ddp", "fsdp"):
        assert losses(tmp_path / strategy) == pytest.approx(one, rel=1e-4), strategy
        for task, metrics in tasks(tmp_path / "one").items():
            assert tasks(tmp_path / strategy)[task] == pytest.approx(metrics, abs=1e-4), strategy
        # rank 0 alone wrote the run: one line per step, one model
        assert (tmp_path / strategy / "model.safetensors").is_file()
    ddp = load_file(str(tmp_path / "ddp" / "checkpoint.safetensors"))
    fsdp = load_file(str(tmp_path / "fsdp" / "checkpoint.safetensors"))
    assert sorted(fsdp) == sorted(ddp)
    for name, tensor in ddp.items():
        # a key bias has no gradient in exact arithmetic (softmax ignores a constant added to
        # every score): AdamW turns the float noise there into steps of up to lr (3e-3)
        atol = 3e-3 if name.endswith("kv.bias") else 1e-5
        torch.testing.assert_close(fsdp[name], tensor, atol=atol, rtol=1e-4, msg=name)


@pytest.mark.parametrize(("strategy", "epochs"), [("ddp", 30), ("fsdp", 10)])
def test_a_killed_two_process_run_resumes_to_the_uninterrupted_metrics(
    world: Path, tmp_path: Path, strategy: str, epochs: int
):
    """Killed after a quarter of its steps (FSDP's collectives make its steps slower on the
    CPU, so it runs fewer), resumed: the metrics of the uninterrupted run."""
    data = tiny_config(world, epochs=epochs, checkpoint_every=5, strategy=strategy)
    data["data"] |= {"stream": True, "workers": 1}
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(data))
    finished(omnifuse("train", config, "--out", tmp_path / "reference", "--nproc", "2"))

    out, steps = tmp_path / "killed", epochs * 4
    process = omnifuse("train", config, "--out", out, "--nproc", "2")
    deadline = time.monotonic() + 180
    while checkpoint_step(out / "checkpoint.safetensors") < steps // 4:
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "no checkpoint within 180 s"
        time.sleep(0.02)
    for pid in [process.pid, *descendants(process.pid)]:  # torchrun, its ranks, their workers
        os.kill(pid, signal.SIGKILL)
    process.wait()
    killed_at = checkpoint_step(out / "checkpoint.safetensors")
    assert steps // 4 <= killed_at < steps and not (out / "metrics.json").exists()

    finished(omnifuse("train", config, "--out", out, "--nproc", "2", "--resume"))
    assert tasks(out) == tasks(tmp_path / "reference")
    with (out / "steps.csv").open() as file:
        assert [int(row["step"]) for row in csv.DictReader(file)] == list(range(1, steps + 1))


@pytest.mark.parametrize(
    ("cores", "workers", "local", "expected"),
    [(2, 0, 1, 1), (1, 0, 1, 1), (16, 0, 1, 15), (16, 2, 2, 6), (4, 4, 1, 1)],
)
def test_threads_leave_a_core_and_share_the_rest(
    monkeypatch: pytest.MonkeyPatch, cores: int, workers: int, local: int, expected: int
):
    """Unset train.threads: the usable cores less one per data worker and one, shared among
    the machine's processes; train.threads and OMP_NUM_THREADS win over it."""
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(local))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)))
    try:
        assert distributed.share_cores(None, workers) == expected == torch.get_num_threads()
        assert distributed.share_cores(3, workers) == 3 == torch.get_num_threads()
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        assert distributed.share_cores(None, workers) == 3  # torch's (here: the last set)
    finally:
        torch.set_num_threads(before)
