"""Time series: files and lists, layout, standardisation, gaps, truncation, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from omnifuse.errors import ConfigError, DataError
from omnifuse.interfaces import Collate, Sample
from omnifuse.manifest import Manifest
from omnifuse.modalities.timeseries import TimeSeriesConfig
from omnifuse.registry import create_encoder, create_modality

NAN = float("nan")


def test_every_format_reads_as_channels_by_time(tmp_path: Path):
    steps = [[1.0, 10.0], [2.0, NAN], [3.0, 30.0]]  # time x channels
    np.save(tmp_path / "s.npy", np.array(steps))
    (tmp_path / "s.csv").write_text("speed,load\n1,10\n2,\n3,30\n")
    (tmp_path / "plain.csv").write_text("1,10\n2,\n3,30\n")
    modality = create_modality("s", TimeSeriesConfig(channels=2))
    cells = ["s.npy", "s.csv", "plain.csv", json.dumps(steps).replace("NaN", "null"), steps]
    for cell in cells:
        series = modality.load({"s": cell}, tmp_path)
        assert series.shape == (2, 3), cell
        assert series[0].tolist() == [1.0, 2.0, 3.0]
        assert series[1, 1].isnan() and series[1, 2] == 30.0
    one = create_modality("s", TimeSeriesConfig()).load({"s": [1, 2, 3, 4]}, tmp_path)
    assert one.shape == (1, 4)  # a flat list is one channel


def test_fit_learns_channels_and_statistics_ignoring_gaps():
    rows = [{"s": [[1.0, 5.0], [3.0, NAN]]}, {"s": [[2.0, 7.0]]}, {"s": None}]
    config = create_modality("s", TimeSeriesConfig()).fit(Manifest(Path("m"), rows), [0, 1, 2])
    assert config.channels == 2
    assert config.mean == pytest.approx([2.0, 6.0])
    assert config.std == pytest.approx([np.std([1, 3, 2]), 1.0])
    series = create_modality("s", config).load({"s": [[3.0, 5.0]]}, Path("."))
    assert series[:, 0].tolist() == pytest.approx([1 / np.std([1, 3, 2]), -1.0])


def test_long_series_are_cut_and_counted():
    modality = create_modality("sensor", TimeSeriesConfig(channels=1, max_length=4))
    assert modality.load({"sensor": list(range(10))}, Path(".")).shape == (1, 4)
    modality.load({"sensor": [1, 2]}, Path("."))
    assert modality.notes() == {
        "series": 2,
        "truncated": 1,
        "message": "sensor: 1 of 2 series truncated to 4 steps",
    }


def test_a_long_series_file_is_read_no_further_than_max_length(tmp_path: Path):
    """A million steps in a .npy or a .csv: only max_length + 1 are read (the one more says it
    was cut), and the fitted statistics are those of the steps the model reads."""
    import tracemalloc

    steps = np.arange(1_000_000, dtype=np.float32)[:, None].repeat(2, axis=1)
    np.save(tmp_path / "long.npy", steps)
    with (tmp_path / "long.csv").open("w") as file:
        file.write("a,b\n" + "".join(f"{i},{i}\n" for i in range(200_000)))
    modality = create_modality("s", TimeSeriesConfig(channels=2, max_length=8))
    for cell in ("long.npy", "long.csv"):
        tracemalloc.start()
        series = modality.load({"s": cell}, tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert series.shape == (2, 8) and series[0].tolist() == list(range(8)), cell
        assert peak < 1_000_000, (cell, peak)  # the file is 8 MB (npy) and 2.6 MB (csv)
    assert modality.notes()["truncated"] == 2
    fitted = modality.fit(Manifest(tmp_path / "m.csv", [{"s": "long.npy"}]), [0])
    assert fitted.mean == pytest.approx([3.5, 3.5])  # steps 0..7, not the whole file


def test_gaps_mask_whole_patches_and_mark_partial_ones():
    encoder = create_encoder("timeseries_patch", dim=8, channels=1, patch=2, depth=0).eval()
    x = torch.tensor([[[1.0, NAN, NAN, NAN, 5.0, 6.0]]])  # (B=1, C=1, T=6)
    out = encoder(x, torch.tensor([6]))
    assert out.mask.tolist() == [[True, False, True]]  # the all-gap patch is masked
    assert torch.isfinite(out.tokens).all()
    # a partly observed patch differs from the same patch fully observed at the gap's fill
    filled = encoder(torch.tensor([[[1.0, 0.0, NAN, NAN, 5.0, 6.0]]]), torch.tensor([6]))
    assert not torch.allclose(out.tokens[0, 0], filled.tokens[0, 0])


def test_an_all_gap_or_empty_series_is_present_with_no_valid_token():
    modality = create_modality("s", TimeSeriesConfig(channels=2))
    gaps = modality.load({"s": [[NAN, NAN]] * 5}, Path("."))
    empty = modality.load({"s": "[]"}, Path("."))
    assert empty.shape == (2, 0)
    batch = Collate({"s": gaps}, {})([Sample("0", {"s": gaps}), Sample("1", {"s": empty})])
    assert batch.lengths["s"].tolist() == [5, 0] and batch.present["s"].all()
    out = modality.build_encoder(8)(batch.inputs["s"], batch.lengths["s"])
    assert not out.mask.any()
    assert torch.isfinite(out.tokens).all()


def test_bad_series_are_clear_errors(tmp_path: Path):
    np.save(tmp_path / "cube.npy", np.zeros((2, 3, 4)))
    (tmp_path / "words.csv").write_text("a,b\n1,x\n")
    (tmp_path / "broken.npy").write_text("no")
    modality = create_modality("s", TimeSeriesConfig(channels=2))
    cases = {
        "gone.npy": r"column 's': file not found: gone.npy",
        "cube.npy": r"column 's': expected a series of shape \(time, channels\), got \(2, 3, 4\)",
        "words.csv": r"column 's': cannot read series 'words.csv'",
        "broken.npy": r"column 's': cannot read series 'broken.npy'",
        "notes.txt": r"column 's': expected a .npy or .csv file or a JSON list",
        "[1, 2,": r"column 's': not a valid JSON list",
        "[[1, 2], [3]]": r"column 's': cannot read series",
        "[1, 2, 3]": r"column 's': series has 1 channels, expected 2",
        "[[1, Infinity]]": r"column 's': infinite values",
    }
    for cell, message in cases.items():
        with pytest.raises(DataError, match=message):
            modality.load({"s": cell}, tmp_path)
    mixed = Manifest(Path("m"), [{"s": [1.0, 2.0]}, {"s": [[1.0, 2.0]]}])
    with pytest.raises(DataError, match=r"training series have \[1, 2\] channels; set"):
        create_modality("s", TimeSeriesConfig()).fit(mixed, [0, 1])
    with pytest.raises(ConfigError, match=r"modalities.s.channels: not set"):
        create_modality("s", TimeSeriesConfig()).build_encoder(8)
