"""Checkpoints: atomic, pickle-free, and a run killed with SIGKILL resumes to identical metrics."""

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
import yaml
from safetensors import safe_open

from omnifuse.config import parse_config
from omnifuse.errors import OmnifuseError
from omnifuse.train.checkpoint import CHECKPOINT_FILE, load_checkpoint, save_checkpoint
from omnifuse.train.run import run
from tests.conftest import tiny_config


def checkpoint_step(path: Path) -> int:
    try:
        with safe_open(str(path), framework="pt") as file:
            return int(json.loads(file.metadata()["omnifuse"])["step"])
    except Exception:  # not written yet, or being replaced
        return -1


def test_checkpoint_round_trip_restores_optimizer_schedule_and_rng(tmp_path: Path):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 / (step + 1))
    for _ in range(3):
        model(torch.randn(4, 3)).sum().backward()
        optimizer.step()
        schedule.step()
    save_checkpoint(
        tmp_path,
        model=model,
        optimizer=optimizer,
        schedule=schedule,
        step=3,
        history={"steps": [{"loss": 1.0}], "epochs": []},
    )
    expected_next = torch.rand(3)

    fresh = torch.nn.Linear(3, 2)
    fresh_optimizer = torch.optim.AdamW(fresh.parameters(), lr=0.1)
    fresh_schedule = torch.optim.lr_scheduler.LambdaLR(fresh_optimizer, lambda s: 1 / (s + 1))
    step, history = load_checkpoint(
        tmp_path, model=fresh, optimizer=fresh_optimizer, schedule=fresh_schedule
    )
    assert step == 3 and history == {"steps": [{"loss": 1.0}], "epochs": []}
    torch.testing.assert_close(fresh.weight, model.weight, rtol=0, atol=0)
    assert fresh_schedule.get_last_lr() == schedule.get_last_lr()
    state, fresh_state = optimizer.state_dict()["state"], fresh_optimizer.state_dict()["state"]
    torch.testing.assert_close(fresh_state[0]["exp_avg_sq"], state[0]["exp_avg_sq"])
    assert torch.equal(torch.rand(3), expected_next)  # the torch RNG continues where it was
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_FILE]  # no temporary left


def test_a_broken_checkpoint_is_a_clear_error(tmp_path: Path):
    (tmp_path / CHECKPOINT_FILE).write_bytes(b"not safetensors")
    model = torch.nn.Linear(1, 1)
    optimizer = torch.optim.AdamW(model.parameters())
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    with pytest.raises(OmnifuseError, match="not a readable omnifuse checkpoint"):
        load_checkpoint(tmp_path, model=model, optimizer=optimizer, schedule=schedule)


def test_runs_refuse_to_overwrite_or_resume_the_wrong_run(world: Path, tmp_path: Path):
    config = parse_config(tiny_config(world, epochs=1))
    with pytest.raises(OmnifuseError, match=r"no checkpoint\.safetensors to resume from"):
        run(config, tmp_path / "a", resume=True, progress=False)
    run(config, tmp_path / "a", progress=False)
    with pytest.raises(OmnifuseError, match=r"already holds a run .*--resume"):
        run(config, tmp_path / "a", progress=False)
    other = parse_config(tiny_config(world, epochs=2))
    with pytest.raises(OmnifuseError, match="started with a different config"):
        run(other, tmp_path / "a", resume=True, progress=False)


@pytest.mark.parametrize("stream", [False, True], ids=["in-memory", "streaming-2-workers"])
def test_sigkill_then_resume_gives_identical_metrics(world: Path, tmp_path: Path, stream: bool):
    data = tiny_config(world, epochs=30, checkpoint_every=5)
    data["data"] |= {"stream": stream, "workers": 2}
    config_path = tmp_path / "c.yaml"
    config_path.write_text(yaml.safe_dump(data))
    reference = run(parse_config(data), tmp_path / "reference", progress=False)

    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "omnifuse", "train", str(config_path), "--out", str(out)]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while checkpoint_step(out / CHECKPOINT_FILE) < 30 and time.monotonic() < deadline:
        assert process.poll() is None, "the run ended before it could be killed"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = checkpoint_step(out / CHECKPOINT_FILE)
    assert 30 <= killed_at < 120 and not (out / "metrics.json").exists()

    resumed = run(parse_config(data), out, resume=True, progress=False)
    assert resumed["tasks"] == reference["tasks"]
    # the steps re-done after the checkpoint are logged once
    with (out / "steps.csv").open() as file:
        steps = [int(row["step"]) for row in csv.DictReader(file)]
    assert steps == list(range(1, 121))
