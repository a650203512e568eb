"""Audio: band-limited resampling, mono mixing, the spectrogram-patch encoder's masks."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from omnifuse.errors import ConfigError, DataError
from omnifuse.modalities.audio import AudioConfig, resample
from omnifuse.registry import create_encoder, create_modality


def tone(hz: float, rate: int, seconds: float = 1.0) -> torch.Tensor:
    return torch.sin(2 * math.pi * hz * torch.arange(int(rate * seconds)) / rate)


@pytest.mark.parametrize(("rate", "target"), [(44100, 16000), (8000, 16000), (22050, 16000)])
def test_resampling_keeps_a_tone_in_band(rate: int, target: int):
    out = resample(tone(1000.0, rate), rate, target)
    assert out.shape == (target,)
    error = (out - tone(1000.0, target))[100:-100].abs().max()  # away from the edges
    assert error < 5e-3


def test_resampling_down_removes_what_the_new_rate_cannot_hold():
    out = resample(tone(7000.0, 22050), 22050, 8000)  # above the new 4 kHz Nyquist
    assert out[100:-100].abs().max() < 0.02  # filtered out, not aliased to 1 kHz


def test_audio_waveform_features_resample_mix_and_cut(tmp_path: Path):
    stereo = np.stack([np.full(16000, 0.5), np.full(16000, -0.1)], axis=1).astype(np.float32)
    soundfile.write(tmp_path / "a.wav", stereo, 8000)  # 2 s at 8 kHz
    config = AudioConfig(features="waveform", sample_rate=16000, max_seconds=1.5)
    wave = create_modality("audio", config).load({"audio": "a.wav"}, tmp_path)
    assert wave.shape == (24000,)  # resampled to 16 kHz, cut to 1.5 s
    torch.testing.assert_close(wave[100:-100], torch.full((23800,), 0.2), atol=1e-3, rtol=0)


def test_log_mel_frames_follow_the_clip_length(tmp_path: Path):
    soundfile.write(tmp_path / "short.wav", tone(440.0, 16000, 0.25).numpy(), 16000)
    config = AudioConfig(n_mels=16, hop=160, max_seconds=1.0)
    spectrum = create_modality("audio", config).load({"audio": "short.wav"}, tmp_path)
    assert spectrum.shape == (16, 4000 // 160 + 1)


def test_bad_audio_is_a_clear_error(tmp_path: Path):
    (tmp_path / "x.wav").write_text("not audio")
    modality = create_modality("voice", AudioConfig())
    with pytest.raises(DataError, match=r"column 'voice': cannot read audio x.wav"):
        modality.load({"voice": "x.wav"}, tmp_path)
    with pytest.raises(DataError, match=r"column 'voice': file not found: y.wav"):
        modality.load({"voice": "y.wav"}, tmp_path)


def test_patch_encoder_tiles_mels_and_time_and_masks_by_length():
    encoder = create_encoder(
        "audio_patch", dim=16, n_mels=20, sample_rate=16000, patch_mels=8, patch_frames=4
    )
    out = encoder(torch.randn(2, 20, 10), torch.tensor([10, 5]))
    # ceil(20 / 8) = 3 bands x ceil(10 / 4) = 3 steps, band-major
    assert out.tokens.shape == (2, 9, 16)
    assert out.mask[0].all()
    assert out.mask[1].tolist() == [True, True, False] * 3
    with pytest.raises(ConfigError, match=r"audio_patch: patch_mels and patch_frames must be >= 1"):
        create_encoder("audio_patch", dim=16, n_mels=20, sample_rate=16000, patch_frames=0)


def test_a_truncated_wav_is_refused(tmp_path: Path):
    soundfile.write(tmp_path / "full.wav", np.zeros(16000, dtype=np.float32), 16000)
    whole = (tmp_path / "full.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(whole[: len(whole) // 2])
    modality = create_modality("audio", AudioConfig())
    assert modality.load({"audio": "full.wav"}, tmp_path) is not None
    with pytest.raises(DataError, match=r"audio cut\.wav is truncated: its header declares 32000"):
        modality.load({"audio": "cut.wav"}, tmp_path)
