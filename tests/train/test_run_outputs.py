"""What a run writes beside the model: CSV and TensorBoard logs, the report, ablation."""

from __future__ import annotations

import csv
import struct
from pathlib import Path

from tensorboardX.proto import event_pb2

from omnifuse.config import parse_config
from omnifuse.train.run import run
from tests.conftest import tiny_config


def tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Scalars from TFRecord-framed event files: (length u64, crc u32, data, crc u32)."""
    scalars: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack_from("<Q", data, offset)
            event = event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length])
            offset += 12 + length + 4
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def test_logs_report_and_ablation(world: Path, tmp_path: Path):
    metrics = run(parse_config(tiny_config(world, epochs=2)), tmp_path, progress=False)
    with (tmp_path / "steps.csv").open() as file:
        steps = list(csv.DictReader(file))
    assert [int(s["step"]) for s in steps] == list(range(1, len(steps) + 1))
    assert {"loss", "loss/scene", "lr", "epoch"} <= set(steps[0])
    with (tmp_path / "epochs.csv").open() as file:
        epochs = list(csv.DictReader(file))
    assert [e["epoch"] for e in epochs] == ["1", "2"]
    assert int(epochs[-1]["step"]) == len(steps)

    scalars = tensorboard_scalars(tmp_path / "tensorboard")
    assert [step for step, _ in scalars["train/loss"]] == list(range(1, len(steps) + 1))
    assert abs(scalars["train/loss"][0][1] - float(steps[0]["loss"])) < 1e-5
    assert len(scalars["val/scene/accuracy"]) == 2

    assert set(metrics["ablation"]) == {"audio", "image", "tabular", "text"}
    without_image = metrics["ablation"]["image"]
    assert (
        without_image["retrieval"]["image_to_text_R@1"]
        != without_image["retrieval"]["image_to_text_R@1"]
    )  # NaN: nothing to retrieve with
    assert 0 <= without_image["scene"]["accuracy"] <= 1

    report = (tmp_path / "report.md").read_text()
    assert "| scene / accuracy |" in report and "without image" in report
    assert "n/a" in report
    for figure in ("training_curves.png", "confusion_scene.png", "retrieval_retrieval.png"):
        assert f"]({figure})" in report and (tmp_path / figure).stat().st_size > 0


def test_a_fresh_run_replaces_old_logs(world: Path, tmp_path: Path):
    config = parse_config(tiny_config(world, epochs=1))
    run(config, tmp_path, checkpoints=False, progress=False)
    run(config, tmp_path, checkpoints=False, progress=False)
    with (tmp_path / "steps.csv").open() as file:
        steps = list(csv.DictReader(file))
    assert [int(s["step"]) for s in steps] == list(range(1, len(steps) + 1))
    assert len(list((tmp_path / "tensorboard").iterdir())) == 1
