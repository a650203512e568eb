"""The benchmark runner end to end on the tiny world, its pieces, and `omnifuse bench`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from omnifuse.bench import DATASETS, bench_config, run_bench
from omnifuse.bench.cost import PeakMemory, matmul_peak
from omnifuse.bench.runner import entries
from omnifuse.cli import cli
from omnifuse.config import parse_config
from omnifuse.errors import ConfigError
from tests.conftest import tiny_config


def small_config(world: Path):
    """Image and audio only, one classification task, one epoch."""
    data = tiny_config(world, epochs=1)
    data["modalities"] = {k: data["modalities"][k] for k in ("image", "audio")}
    data["model"]["tasks"] = {"scene": data["model"]["tasks"]["scene"]}
    return parse_config(data)


def test_runner_writes_results_plots_and_report(world: Path, tmp_path: Path):
    out = tmp_path / "bench"
    results = run_bench(
        small_config(world),
        out,
        fusions="gmu",
        seeds=1,
        budget=3000,
        progress=False,
        throughput_steps=1,
        peak=matmul_peak(size=256, repeats=2),
    )
    labels = ["gmu", "late", "unimodal (audio)", "unimodal (image)"]  # late: the reference
    assert results["settings"]["fusions"] == labels
    saved = json.loads((out / "results.json").read_text())
    assert set(saved) >= {"settings", "matmul_peak", "runs", "performance", "summary", "winner"}
    assert saved["matmul_peak"]["flops_per_s"] > 0
    assert [r["label"] for r in saved["runs"]] == labels
    run = saved["runs"][0]
    for key in (
        "accuracy",
        "macro_f1",
        "fusion_parameters",
        "model_parameters",
        "train_seconds",
        "train_samples_per_s",
        "inference_samples_per_s",
        "peak_rss_mib",
        "robustness",
        "relative_robustness",
        "effective_robustness",
    ):
        assert key in run, key
    assert 0 <= run["accuracy"] <= 1
    assert set(run["robustness"]) == {"audio", "image"}
    assert set(run["robustness"]["image"]) == {"gaussian", "occlusion", "missing"}
    assert set(run["robustness"]["audio"]) == {"noise", "dropout", "missing"}
    curve = run["robustness"]["image"]["gaussian"]
    assert len(curve) == 11 and curve[0] == pytest.approx(run["accuracy"])
    late = next(r for r in saved["runs"] if r["label"] == "late")
    assert late["effective_robustness"]["image"]["occlusion"] == 0
    for label in labels:
        p = saved["performance"][label]
        assert p["flops"] > 0 and p["samples_per_s"] > 0 and p["mfu"] > 0
        s = saved["summary"][label]
        assert s["accuracy"]["n"] == 1 and s["accuracy"]["std"] is None
    assert saved["winner"]["label"] in ("gmu", "late")
    assert set(saved["winner"]["over_unimodal"]) == {"unimodal (audio)", "unimodal (image)"}
    report = (out / "results.md").read_text()
    for heading in ("Winner", "## Accuracy", "MFU", "Relative robustness", "Effective robustness"):
        assert heading in report
    for name in ("image_gaussian", "image_occlusion", "audio_noise", "audio_dropout"):
        assert (out / f"robustness_{name}.png").stat().st_size > 0
    # the missing-modality table: 0, 50 and 100% of the test samples without each modality,
    # 0% being the clean accuracy, beside the unimodal baselines, in results.json and .md
    for r in saved["runs"]:
        assert set(r["missing"]) == {"audio", "image"}
        for m in ("audio", "image"):
            assert list(r["missing"][m]) == ["0", "50", "100"]
            assert r["missing"][m]["0"] == pytest.approx(r["accuracy"])
            assert r["missing"][m]["100"] == r["robustness"][m]["missing"][-1]
    for label in labels:
        s = saved["summary"][label]
        assert s["missing"]["image"]["0"]["mean"] == pytest.approx(s["accuracy"]["mean"])
    alone = {r["label"]: r["accuracy"] for r in saved["runs"]}
    # the image baseline never reads the audio: removing it changes nothing
    assert saved["summary"]["unimodal (image)"]["missing"]["audio"]["100"]["mean"] == (
        pytest.approx(alone["unimodal (image)"])
    )
    section = report[report.index("## Missing modalities") :]
    header = section.splitlines()[2]
    for column in ("without audio 0%", "without audio 50%", "without image 100%"):
        assert column in header
    best = next(line for line in section.splitlines() if line.startswith("| best other"))
    assert f"{alone['unimodal (image)']:.3f}" in best.split("|")[2]  # without audio: image's
    assert (out / "missing_modalities.png").stat().st_size > 0


def test_entries_add_late_fusion_and_a_baseline_per_modality():
    found = entries("gmu,early", ["b", "a"])
    assert [e.label for e in found] == ["gmu", "early", "late", "unimodal (a)", "unimodal (b)"]
    assert found[-1].fusion == {"type": "unimodal", "modality": "b"}
    every = [e.label for e in entries("all", ["a"])]
    assert "unimodal" not in every and "perceiver" in every and "late" in every
    with pytest.raises(ConfigError, match="unknown fusion 'gmo' \\(did you mean 'gmu'\\?\\)"):
        entries("gmo", ["a"])


def test_dataset_base_configs():
    world = bench_config("world", ["data.dataset.n=50"])
    assert set(world.model.tasks) == {"scene"}
    assert world.model.tasks["scene"].options["target"] == "scene_class"
    assert set(world.modalities) == {"image", "text", "audio", "tabular"}
    assert DATASETS["avmnist"] == "avmnist"  # preset:avmnist
    try:
        bench_config("avmnist")
    except ConfigError as error:  # before the preset lands
        assert "preset:avmnist" in str(error)
    with pytest.raises(ConfigError, match="unknown dataset"):
        bench_config("mnist")


def test_matmul_peak_and_peak_memory():
    peak = matmul_peak(size=128, repeats=2)
    assert peak["flops_per_s"] > 0 and peak["size"] == 128
    memory = PeakMemory()
    memory.start()
    block = bytearray(64 * 2**20)
    block[::4096] = b"x" * len(block[::4096])  # touch every page
    memory.stop()
    if memory.peak_mib is not None:
        assert memory.added_mib is not None and memory.added_mib >= 60


def test_cli_bench(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OMNIFUSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(
        "omnifuse.bench.runner.matmul_peak", lambda: matmul_peak(size=256, repeats=2)
    )
    out = tmp_path / "bench"
    small = [
        "data.dataset.n=60",
        "modalities={tabular: {kind: tabular, numeric: [temperature], categorical: [venue]}}",
        "model.dim=16",
        "train.batch_size=16",
        "train.threads=1",
    ]
    args = ["bench", "--dataset", "world", "--fusions", "late", "--seeds", "1", "--epochs", "1"]
    args += ["--budget", "2000", "--throughput-steps", "1", "--out", str(out)]
    for override in small:
        args += ["--set", override]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "winner: late" in result.output
    assert (out / "results.json").is_file() and (out / "results.md").is_file()
    bad = CliRunner().invoke(cli, ["bench", "--out", str(out), "--fusions", "lat"])
    assert bad.exit_code == 1
    assert "unknown fusion 'lat'" in bad.output
