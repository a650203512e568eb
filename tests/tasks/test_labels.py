"""Labels and targets read by one rule whatever the manifest format gives (text, numbers)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from omnifuse.config import parse_config
from omnifuse.data.dataset import label_notes
from omnifuse.data.validate import validate_manifest
from omnifuse.errors import ConfigError, DataError
from omnifuse.manifest import Manifest, read_manifest, split_rows
from omnifuse.tasks.classification import ClassificationSpec, label_text
from omnifuse.tasks.generation import GenerationSpec
from omnifuse.tasks.regression import RegressionSpec
from omnifuse.train.run import prepare
from tests.conftest import tiny_config, world_copy


@pytest.mark.parametrize(
    ("value", "label"),
    [
        (1, "1"),
        (1.0, "1"),
        ("1", "1"),
        ("1.0", "1"),
        (" 1.00 ", "1"),
        (-2.0, "-2"),
        ("-2.0", "-2"),
        (0.5, "0.5"),
        ("0.50", "0.50"),  # text that is not a whole number is kept as written
        ("007", "007"),
        (True, "True"),
        ("cat ", "cat"),
        ("", None),
        ("  ", None),
        (None, None),
        (float("nan"), None),
    ],
)
def test_label_text(value: object, label: str | None):
    assert label_text(value) == label


@given(st.integers(-(2**53), 2**53))
def test_a_whole_number_is_one_label_however_it_is_written(number: int):
    labels = {label_text(v) for v in (number, float(number), str(number), f"{number}.0")}
    assert labels == {str(number)}


def test_a_list_is_no_label():
    spec = ClassificationSpec("y", target="y", classes=["a", "b"])
    with pytest.raises(DataError, match=r"^column 'y': expected a label \(text or a number\)"):
        spec.load_target({"y": [1, 2]})


def test_labels_from_text_and_numbers_are_one_class(tmp_path: Path):
    path = tmp_path / "m.jsonl"
    labels = [1, "1", 1.0, " 2", 2.0, "2.0", None, "  "]
    path.write_text("".join(json.dumps({"id": i, "y": v}) + "\n" for i, v in enumerate(labels)))
    manifest = read_manifest(path)
    spec = ClassificationSpec("y", target="y")
    assert spec.fit(manifest, range(len(labels))) == {"classes": ["1", "2"]}
    spec = ClassificationSpec("y", target="y", classes=["1", "2"])
    targets = [spec.load_target(row) for row in manifest.rows]
    assert [None if t is None else t.item() for t in targets] == [0, 0, 0, 1, 1, 1, None, None]
    assert [spec.has_label(row) for row in manifest.rows] == [True] * 6 + [False] * 2


def test_given_classes_are_read_by_the_same_rule():
    spec = ClassificationSpec("y", target="y", classes=["2.0", " cat"])
    assert spec.classes == ["2", "cat"]
    assert spec.load_target({"y": 2}).item() == 0
    with pytest.raises(ConfigError, match=r"^model\.tasks\.y\.classes: class '1' appears twice"):
        ClassificationSpec("y", target="y", classes=["1", "1.0"])
    with pytest.raises(ConfigError, match=r"^model\.tasks\.y\.classes: an empty class"):
        ClassificationSpec("y", target="y", classes=["a", " "])


@pytest.mark.parametrize(
    ("value", "number"), [(3, 3.0), (2.5, 2.5), ("1.5", 1.5), (" -2 ", -2.0), ("1e3", 1000.0)]
)
def test_regression_reads_numbers_and_numeric_text(value: object, number: float):
    assert RegressionSpec("s", target="s").value({"s": value}) == number


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("warm", "not a number: 'warm'"),
        ("1_000", "not a number: '1_000'"),
        ("nan", "not a number: 'nan'"),
        (True, "not a number: True"),
        ([1.0], r"not a number: \[1.0\]"),
        ("inf", "not a number: 'inf'"),
        ("1e999", "not a finite number: '1e999'"),
        (10**400, "not a finite number"),
        (float("inf"), "not a finite number: inf"),
    ],
)
def test_regression_refuses_anything_else(value: object, problem: str):
    with pytest.raises(DataError, match=rf"^column 's': {problem}"):
        RegressionSpec("s", target="s").value({"s": value})


@pytest.mark.parametrize("value", [None, "", "   ", float("nan")])
def test_an_empty_target_is_a_missing_label(value: object):
    row = {"t": value}
    assert RegressionSpec("s", target="t").load_target(row) is None
    assert ClassificationSpec("c", target="t", classes=["a", "b"]).load_target(row) is None
    assert GenerationSpec("g", target="t").load_target(row) is None
    assert not RegressionSpec("s", target="t").has_label(row)


def test_a_misspelt_target_names_the_closest_column(world: Path):
    data = tiny_config(world)
    data["model"]["tasks"]["scene"]["target"] = "scene_clas"
    with pytest.raises(
        DataError,
        match=r"^model\.tasks\.scene\.target: no column 'scene_clas' in manifest\.parquet "
        r"\(did you mean 'scene_class'\?\)$",
    ):
        prepare(parse_config(data), progress=False)
    data = tiny_config(world)
    data["model"]["tasks"]["score"]["target"] = "scroe"
    with pytest.raises(DataError, match=r"score\.target: no column 'scroe'.*'score'\?\)$"):
        validate_manifest(world, parse_config(data))


def test_a_misspelt_modality_column_names_the_closest(world: Path):
    data = tiny_config(world)
    data["modalities"]["text"]["column"] = "captoin"
    with pytest.raises(
        DataError, match=r"no column 'captoin' \(did you mean 'caption'\?\) \(named by modality"
    ):
        prepare(parse_config(data), progress=False)


@pytest.fixture
def unlabelled_world(world: Path, tmp_path: Path) -> tuple[Path, list[dict]]:
    """The tiny world as JSON lines, some rows without a scene label (empty, blank, null)."""
    folder, rows = world_copy(world, tmp_path)
    for index, empty in ((0, ""), (1, "  "), (2, None), (3, None)):
        rows[index]["scene_class"] = empty
    path = folder / "unlabelled.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, rows


def test_rows_without_a_label_are_counted_not_bad(
    unlabelled_world: tuple[Path, list[dict]], caplog: pytest.LogCaptureFixture
):
    path, rows = unlabelled_world
    config = parse_config(tiny_config(path))
    with caplog.at_level(logging.WARNING):
        bad = validate_manifest(path, config).bad
    assert bad == []
    manifest = Manifest(path, rows)
    splits = split_rows(manifest, column="split", val_fraction=0.1, test_fraction=0.1, seed=0)
    counts = {s: sum(i < 4 for i in splits[s]) for s in splits}
    expected = ", ".join(f"{n} of {len(splits[s])} {s}" for s, n in counts.items() if n)
    message = (
        f"task 'scene': {expected} rows have no label in column 'scene_class' "
        "(left out of its loss and metrics)"
    )
    assert message in caplog.messages
    assert not any("task 'score'" in m for m in caplog.messages)

    prepared = prepare(config, progress=False)
    assert prepared.labels["scene"] == {
        "column": "scene_class",
        "unlabelled": counts,
        "message": message,
    }
    assert prepared.labels["score"] == {
        "column": "score",
        "unlabelled": {"train": 0, "val": 0, "test": 0},
    }


def test_label_notes_count_each_split_and_leave_out_ragged_rows(tmp_path: Path):
    path = tmp_path / "m.csv"
    path.write_text("id,y\na,1\nb,\nc, \nd,2\ne,2,extra\n")
    manifest = read_manifest(path)
    task = ClassificationSpec("y", target="y", classes=["1", "2"])
    notes = label_notes(manifest, {"train": [0, 1, 4], "test": [2, 3]}, {"y": task})
    assert notes == {
        "y": {
            "column": "y",
            "unlabelled": {"train": 1, "test": 1},
            "message": "task 'y': 1 of 2 train, 1 of 2 test rows have no label in column 'y' "
            "(left out of its loss and metrics)",
        }
    }
