"""`omnifuse tune` from the command line: a search killed mid-trial resumes without repeating
finished trials, and bad input is one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from omnifuse.cli import cli
from omnifuse.tune.study import Search
from tests.conftest import tiny_config

SOURCE = Path(__file__).parents[2] / "src"


def config_file(world: Path, tmp_path: Path) -> Path:
    data = tiny_config(world, epochs=1, threads=1)
    data["modalities"] = {k: data["modalities"][k] for k in ("image", "audio")}
    data["model"]["tasks"] = {"scene": data["model"]["tasks"]["scene"]}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def tune_command(config: Path, out: Path) -> list[str]:
    search = ["--trials", "2", "--fusions", "gmu,late,early", "--fusion-parameters", "2000:6000"]
    return [sys.executable, "-m", "omnifuse", "tune", str(config), "--out", str(out), *search]


def wait_for(condition, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_killed_search_resumes_without_repeating_finished_trials(world: Path, tmp_path: Path):
    config, out = config_file(world, tmp_path), tmp_path / "search"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SOURCE), os.environ.get("PYTHONPATH", "")]),
    }
    first = subprocess.Popen(tune_command(config, out), env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)  # fmt: skip
    finished = out / "trials" / "0000" / "trial.json"
    wait_for(lambda: finished.is_file() and (out / "trials" / "0001").is_dir(), first)
    first.send_signal(signal.SIGKILL)  # during trial 1
    first.wait()
    kept = finished.read_text()
    kept_time = finished.stat().st_mtime_ns
    interrupted = json.loads((out / "trials.json").read_text())
    assert [r["number"] for r in interrupted] == [0]

    second = subprocess.run(tune_command(config, out), env=env, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr
    assert "resuming the search" in second.stdout and "1 trials done" in second.stdout
    assert "trials done: 2 trials" in second.stdout
    assert finished.read_text() == kept and finished.stat().st_mtime_ns == kept_time  # not rerun
    records = json.loads((out / "trials.json").read_text())
    assert [r["number"] for r in records] == [0, 2]  # 1 was killed, 2 redid it
    summary = json.loads((out / "pareto.json").read_text())
    assert summary["trials_done"] == 2 and summary["trials_killed"] == [1]
    assert sorted(p.name for p in (out / "trials").iterdir()) == ["0000", "0002"]
    with Search.open(out, json.loads((out / "search.json").read_text())["signature"]) as search:
        trials = search.trials()
    assert trials[1].state.name == "FAIL" and trials[2].params == trials[1].params
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE"]


def invoke(*args: object):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--budget", "soon"], "tune --budget: cannot read 'soon'"),
        ([], "tune: give --budget, --trials or both"),
        (["--trials", "1", "--task", "scenery"], "'scenery' is not a classification task"),
        (["--trials", "1", "--fusions", "gmu,mean"], "unknown fusion 'mean'"),
        (["--trials", "1", "--lr", "0.01:0.001"], "--lr: expected 0 < MIN <= MAX"),
        (["--trials", "1", "--min-epochs", "2"], "--min-epochs: expected 1 to 1"),
        (["--trials", "1", "--from-analysis", "ANALYSIS"], "recommendation.fusions"),
    ],
)
def test_bad_input_is_one_line(world: Path, tmp_path: Path, options: list[str], message: str):
    analysis = tmp_path / "analysis.json"
    analysis.write_text(json.dumps({"recommendation": {"family": "late", "fusions": "late"}}))
    options = [str(analysis) if o == "ANALYSIS" else o for o in options]
    result = invoke("tune", config_file(world, tmp_path), "--out", tmp_path / "out", *options)
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], lines
    assert not (tmp_path / "out" / "trials").exists()


def test_an_out_of_another_search_is_refused(world: Path, tmp_path: Path):
    out = tmp_path / "out"
    with Search.open(out, {"config": {"other": True}, "task": "scene", "space": {}}):
        pass
    result = invoke("tune", config_file(world, tmp_path), "--out", out, "--trials", "1")
    assert result.exit_code == 1
    assert "holds a different search (its config" in result.output
    assert "choose another --out" in result.output


def test_help_lists_tune():
    result = invoke("--help")
    assert "tune" in result.output
    assert "--from-analysis" in invoke("tune", "--help").output
