"""Tabular: standardised numbers, missing and unknown categories, fitted statistics."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from omnifuse.errors import DataError
from omnifuse.manifest import Manifest
from omnifuse.modalities.tabular import TabularConfig
from omnifuse.registry import create_modality

ROOT = Path(".")


def test_tabular_missing_and_unknown_values_have_their_own_tokens():
    modality = create_modality(
        "tab",
        TabularConfig(
            numeric=["a"], categorical=["c"], stats={"a": (1.0, 2.0)}, categories={"c": ["x", "y"]}
        ),
    )
    assert modality.load({"a": 5, "c": "y"}, ROOT).tolist() == [2.0, 3.0]  # code 2 + index 1
    assert modality.load({"a": None, "c": "zebra"}, ROOT).tolist()[1] == 1.0  # unknown
    assert torch.isnan(modality.load({"a": float("nan"), "c": "x"}, ROOT)[0])  # missing
    assert modality.load({"a": None, "c": None}, ROOT) is None


def test_statistics_are_fitted_on_the_given_rows_only():
    rows = [{"a": 1, "c": "x"}, {"a": 3, "c": None}, {"a": None, "c": "y"}, {"a": 100, "c": "z"}]
    config = create_modality("t", TabularConfig(numeric=["a"], categorical=["c"])).fit(
        Manifest(Path("m.csv"), rows), [0, 1, 2]
    )
    assert config.stats == {"a": pytest.approx((2.0, 2**0.5))}
    assert config.categories == {"c": ["x", "y"]}
    with pytest.raises(DataError, match=r"column 'a': not a number: 'many'"):
        create_modality("t", config).load({"a": "many", "c": "x"}, ROOT)
