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


def _leaves(data: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The paths to every leaf of a nested mapping/list."""
    if isinstance(data, dict):
        return [p for k, v in data.items() for p in _leaves(v, (*path, k))] or [path]
    if isinstance(data, list):
        return [p for i, v in enumerate(data) for p in _leaves(v, (*path, i))] or [path]
    return [path]


def _with(data: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    copy = dict(data) if isinstance(data, dict) else list(data)
    copy[path[0]] = _with(copy[path[0]], path[1:], value)
    return copy


TINY = {
    "data": {"manifest": "m.csv", "stream": False},
    "modalities": {
        "image": {"kind": "image", "size": 32, "encoder": {"type": "image_conv", "width": 8}},
        "text": {"kind": "text", "column": "caption", "max_length": 16},
    },
    "model": {
        "dim": 16,
        "fusion": {"type": "perceiver", "latents": 4},
        "tasks": {
            "scene": {"type": "classification", "target": "scene_class"},
            "retrieval": {"type": "alignment", "between": ["image", "text"]},
        },
    },
    "train": {"epochs": 2, "batch_size": 8, "strategy": "ddp"},
}


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_a_valid_config_with_one_value_changed_is_valid_or_one_line_naming_it(data: Any):
    """One leaf of a valid config replaced by any JSON value: a config, or one ConfigError
    line that names where (a field path or the config's source)."""
    parse_config(TINY)
    path = data.draw(st.sampled_from(_leaves(TINY)))
    value = data.draw(json_values)
    try:
        parse_config(_with(TINY, path, value), "c.yaml")
    except ConfigError as error:
        assert "\n" not in str(error) and str(error).startswith("c.yaml")


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=300), st.binary(max_size=300), st.booleans())
def test_a_damaged_model_directory_raises_only_one_line_errors(
    config: bytes, weights: bytes, keep_config: bool
):
    """Any bytes for config.json and model.safetensors (or a valid config beside damaged
    weights): opening the directory raises one OmnifuseError line, never anything else."""
    import json

    from omnifuse.errors import OmnifuseError
    from omnifuse.model import OmnifuseModel

    with tempfile.TemporaryDirectory() as folder:
        directory = Path(folder)
        (directory / "config.json").write_bytes(
            json.dumps(TINY).encode() if keep_config else config
        )
        (directory / "model.safetensors").write_bytes(weights)
        try:
            OmnifuseModel.from_pretrained(directory)
        except OmnifuseError as error:
            assert "\n" not in str(error)
