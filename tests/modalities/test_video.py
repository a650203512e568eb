"""Video: frames from a folder or an array, uniform sampling, resizing, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from omnifuse.errors import ConfigError, DataError
from omnifuse.manifest import Manifest
from omnifuse.modalities.video import VideoConfig, sample_indices
from omnifuse.registry import create_encoder, create_modality


def clip(frames: int) -> np.ndarray:
    """(T, 8, 8, 3) uint8 whose frame t is filled with the value 10 * t."""
    return np.stack([np.full((8, 8, 3), 10 * t, dtype=np.uint8) for t in range(frames)])


def test_uniform_sampling_takes_segment_middles():
    assert sample_indices(10, 5) == [1, 3, 5, 7, 9]
    assert sample_indices(8, 4) == [1, 3, 5, 7]
    assert sample_indices(2, 4) == [0, 0, 1, 1]  # a short clip repeats frames


def test_folder_and_array_give_the_same_frames(tmp_path: Path):
    array = clip(10)
    np.save(tmp_path / "clip.npy", array)
    (tmp_path / "frames").mkdir()
    for t, frame in enumerate(array):
        Image.fromarray(frame).save(tmp_path / "frames" / f"{t:03d}.png")
    (tmp_path / "frames" / "notes.txt").write_text("not a frame")
    modality = create_modality("v", VideoConfig(frames=5, size=16))
    from_array = modality.read("clip.npy", tmp_path)
    from_folder = modality.read("frames", tmp_path)
    assert from_array.shape == (3, 5, 16, 16)
    torch.testing.assert_close(from_array, from_folder)
    values = (from_array[0, :, 0, 0] * 255).round().tolist()
    assert values == [10.0, 30.0, 50.0, 70.0, 90.0]


def test_grey_arrays_become_rgb_and_statistics_are_fitted(tmp_path: Path):
    np.save(tmp_path / "grey.npy", clip(4)[..., 0])  # (T, H, W)
    modality = create_modality("v", VideoConfig(frames=2, size=8))
    config = modality.fit(Manifest(tmp_path / "m", [{"v": "grey.npy"}]), [0])
    assert config.mean == pytest.approx([20 / 255] * 3)  # frames 1 and 3 hold 10 and 30
    normalised = create_modality("v", config).load({"v": "grey.npy"}, tmp_path)
    assert normalised.mean().abs() < 1e-5


def test_tubelet_encoder_counts_tokens_and_checks_sizes():
    encoder = create_encoder("video_tubelet", dim=16, frames=4, size=16, tubelet=2, patch=8)
    out = encoder(torch.randn(2, 3, 4, 16, 16), torch.zeros(2))
    assert out.tokens.shape == (2, 2 * 4, 16) and out.mask.all()
    with pytest.raises(ConfigError, match=r"frames 5 is not a multiple of tubelet 2"):
        create_encoder("video_tubelet", dim=16, frames=5, size=16)
    with pytest.raises(ConfigError, match=r"frame size 20 is not a multiple of patch 16"):
        create_encoder("video_tubelet", dim=16, frames=4, size=20)


def test_bad_videos_are_clear_errors(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    np.save(tmp_path / "floats.npy", clip(3).astype(np.float32))
    np.save(tmp_path / "flat.npy", np.zeros((3, 8), dtype=np.uint8))
    (tmp_path / "clip.mp4").write_bytes(b"\x00")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "0.png").write_text("not an image")
    modality = create_modality("v", VideoConfig(frames=2, size=8))
    cases = {
        "gone": r"column 'v': file or folder not found: gone",
        "empty": r"column 'v': no frame images in folder empty",
        "floats.npy": r"column 'v': floats.npy holds float32, expected uint8",
        "flat.npy": r"column 'v': flat.npy has shape \(3, 8\), expected \(T, H, W, C\)",
        "clip.mp4": r"column 'v': clip.mp4 is neither a folder of frames nor a .npy file",
        "broken": r"column 'v': cannot read frame 0.png of broken",
    }
    for cell, message in cases.items():
        with pytest.raises(DataError, match=message):
            modality.load({"v": cell}, tmp_path)
