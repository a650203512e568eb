"""Property-based tests: on arbitrary input the config loader and the manifest reader raise
nothing but the project's own error types."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from omnifuse.config import apply_overrides, load_config, parse_config
from omnifuse.errors import ConfigError, DataError
from omnifuse.manifest import read_manifest, split_rows

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
# mappings shaped like configs, so that validation goes deeper than the top level
keys = st.sampled_from(
    [
        "data",
        "modalities",
        "model",
        "train",
        "version",
        "kind",
        "type",
        "tasks",
        "fusion",
        "manifest",
        "dataset",
        "image",
        "text",
        "epochs",
        "dim",
        "encoder",
        "between",
        "target",
    ]
)
config_like = st.recursive(
    st.none()
    | st.integers(-3, 100)
    | st.text(max_size=6)
    | st.sampled_from(
        ["image", "text", "audio", "tabular", "perceiver", "classification", "alignment", "x.csv"]
    ),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(keys, children, max_size=5),
    max_leaves=25,
)


@settings(max_examples=150, deadline=None)
@given(st.one_of(json_values, config_like))
def test_parse_config_raises_only_config_errors(data: Any):
    try:
        parse_config(data)
    except ConfigError as error:
        assert "\n" not in str(error)


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=200), st.sampled_from([".yaml", ".json", ".yml"]))
def test_load_config_raises_only_config_errors(content: bytes, suffix: str):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"c{suffix}"
        path.write_bytes(content)
        with contextlib.suppress(ConfigError):
            load_config(path)


@settings(max_examples=60, deadline=None)
@given(json_values, st.lists(st.text(max_size=12), max_size=3))
def test_overrides_raise_only_config_errors(data: Any, overrides: list[str]):
    with contextlib.suppress(ConfigError):
        parse_config(apply_overrides(data, overrides))


@settings(max_examples=80, deadline=None)
@given(st.binary(max_size=300), st.sampled_from([".csv", ".jsonl", ".parquet", ".txt"]))
def test_read_manifest_raises_only_data_errors(content: bytes, suffix: str):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"m{suffix}"
        path.write_bytes(content)
        try:
            manifest = read_manifest(path)
            split_rows(manifest, column="split", val_fraction=0.1, test_fraction=0.1, seed=0)
        except DataError as error:
            assert "\n" not in str(error)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.dictionaries(st.sampled_from(["id", "split", "image", "y"]), json_values, max_size=4),
        max_size=5,
    )
)
def test_jsonl_rows_of_any_shape_raise_only_data_errors(rows: list[dict[str, Any]]):
    import json

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "m.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        try:
            manifest = read_manifest(path)
            split_rows(manifest, column="split", val_fraction=0.2, test_fraction=0.2, seed=1)
        except DataError:
            pass
