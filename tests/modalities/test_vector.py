"""Vectors: lists and .npy files, the dimension check, projection to tokens."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from omnifuse.errors import ConfigError, DataError
from omnifuse.modalities.vector import VectorConfig
from omnifuse.registry import create_encoder, create_modality


def test_lists_strings_and_files_load_the_same_vector(tmp_path: Path):
    np.save(tmp_path / "e.npy", np.array([0.5, -1.0, 2.0]))
    np.save(tmp_path / "row.npy", np.array([[0.5, -1.0, 2.0]]))
    modality = create_modality("emb", VectorConfig(dim=3))
    for cell in ([0.5, -1.0, 2.0], "[0.5, -1.0, 2.0]", "e.npy", "row.npy"):
        assert modality.load({"emb": cell}, tmp_path).tolist() == [0.5, -1.0, 2.0]


def test_projection_gives_the_configured_number_of_tokens():
    encoder = create_encoder("vector_projection", dim=8, features=3, tokens=4)
    out = encoder(torch.randn(2, 3), torch.full((2,), 3))
    assert out.tokens.shape == (2, 4, 8) and out.mask.all()
    with pytest.raises(ConfigError, match=r"vector_projection: tokens \(0\) must be >= 1"):
        create_encoder("vector_projection", dim=8, features=3, tokens=0)


def test_bad_vectors_are_clear_errors(tmp_path: Path):
    np.save(tmp_path / "long.npy", np.zeros(5))
    modality = create_modality("emb", VectorConfig(dim=3))
    cases = {
        "[1, 2]": r"column 'emb': vector of shape \(2,\), expected \(3,\) \(modalities.emb.dim\)",
        "long.npy": r"column 'emb': vector of shape \(5,\), expected \(3,\)",
        "gone.npy": r"column 'emb': file not found: gone.npy",
        "[1, NaN, 2]": r"column 'emb': the vector holds NaN or infinite values",
        "[1, 2": r"column 'emb': not a valid JSON list",
        '["a", "b", "c"]': r"column 'emb': cannot read vector",
        "hello": r"column 'emb': expected a JSON list of numbers or a .npy file",
    }
    for cell, message in cases.items():
        with pytest.raises(DataError, match=message):
            modality.load({"emb": cell}, tmp_path)
    with pytest.raises(DataError, match=r"column 'emb': expected a JSON list"):
        modality.load({"emb": 3.5}, tmp_path)
