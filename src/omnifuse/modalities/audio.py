"""Audio: WAV/FLAC read with soundfile, mono, resampled, log-mel in torch; a conv encoder."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import soundfile
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from omnifuse.config import AudioConfig
from omnifuse.data.manifest import Manifest
from omnifuse.errors import DataError
from omnifuse.layers.attention import SelfAttentionBlock, sinusoidal_positions
from omnifuse.modalities.base import Modality, Tokens
from omnifuse.registry import create_encoder, register_encoder


@cache
def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int) -> Tensor:
    """Triangular filters on the HTK mel scale, (n_mels, n_fft // 2 + 1)."""

    def to_mel(hz: Tensor) -> Tensor:
        return 2595.0 * torch.log10(1.0 + hz / 700.0)

    def to_hz(mel: Tensor) -> Tensor:
        return 700.0 * (10 ** (mel / 2595.0) - 1.0)

    bins = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    edges = to_hz(torch.linspace(0.0, float(to_mel(torch.tensor(sample_rate / 2))), n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins - lower) / (centre - lower)
    falling = (upper - bins) / (upper - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0.0)


def log_mel(wave: Tensor, config: AudioConfig) -> Tensor:
    """(samples,) -> (n_mels, frames) natural-log mel power."""
    window = torch.hann_window(config.n_fft)
    spec = torch.stft(wave, config.n_fft, config.hop, window=window, return_complex=True)
    power = spec.abs() ** 2  # (freq, frames)
    mel = mel_filterbank(config.n_fft, config.n_mels, config.sample_rate) @ power
    return torch.log(mel + 1e-6)


def resample(wave: Tensor, rate: int, target: int) -> Tensor:
    """Band-limited enough for speech-like content: linear interpolation after a box low-pass."""
    if rate == target:
        return wave
    if target < rate:  # average over the decimation factor before interpolating
        width = max(1, round(rate / target))
        wave = F.avg_pool1d(wave[None, None], width, stride=1, padding=width // 2)[0, 0]
    frames = max(1, round(wave.shape[0] * target / rate))
    return F.interpolate(wave[None, None], size=frames, mode="linear", align_corners=False)[0, 0]


class AudioModality(Modality[AudioConfig]):
    def read(self, value: Any, root: Path) -> Tensor:
        """The file's first `max_seconds` as the configured features, unnormalised."""
        path = self.resolve(str(value), root)
        try:
            data, rate = soundfile.read(path, dtype="float32", always_2d=True)
        except (soundfile.LibsndfileError, RuntimeError, OSError) as error:
            raise DataError(f"column '{self.column}': cannot read audio {value}: {error}") from None
        if data.shape[0] < self.config.n_fft:
            raise DataError(
                f"column '{self.column}': audio {value} is too short "
                f"({data.shape[0]} samples, need at least {self.config.n_fft})"
            )
        wave = torch.from_numpy(data).mean(dim=1)  # mono
        if not torch.isfinite(wave).all():
            raise DataError(f"column '{self.column}': audio {value} contains NaN or inf samples")
        wave = resample(wave, rate, self.config.sample_rate)
        wave = wave[: int(self.config.max_seconds * self.config.sample_rate)]
        return wave if self.config.features == "waveform" else log_mel(wave, self.config)

    def load_value(self, value: Any, root: Path) -> Tensor:
        if self.config.features == "waveform":
            return self.read(value, root)
        mean = self.config.mean if self.config.mean is not None else 0.0
        std = self.config.std if self.config.std is not None else 1.0
        return (self.read(value, root) - mean) / std

    def fit(self, manifest: Manifest, rows: Sequence[int]) -> AudioConfig:
        if self.config.features == "waveform":
            return self.config
        spectra = self.read_some(manifest, rows)
        if not spectra:
            return self.config
        frames = torch.cat([s.flatten() for s in spectra])
        return self.config.model_copy(
            update={"mean": frames.mean().item(), "std": max(frames.std().item(), 1e-3)}
        )

    def build_encoder(self, dim: int) -> nn.Module:
        encoder = self.config.encoder
        return create_encoder(
            encoder.type,
            dim=dim,
            n_mels=self.config.n_mels,
            sample_rate=self.config.sample_rate,
            **encoder.options,
        )


class ConvAudioEncoder(nn.Module):
    """A 1-d convolution over mel frames, strided into tokens, then transformer layers."""

    def __init__(self, *, dim: int, n_mels: int, width: int, stride: int, depth: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Sequential(
            nn.Conv1d(n_mels, width, 3, padding=1),
            nn.GELU(),
            nn.Conv1d(width, dim, stride, stride=stride),
        )
        self.blocks = nn.ModuleList(SelfAttentionBlock(dim=dim, heads=4) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, lengths: Tensor) -> Tokens:
        # x: (B, n_mels, frames); pad frames to a multiple of the stride
        x = F.pad(x, (0, -x.shape[-1] % self.stride))
        tokens = self.conv(x).transpose(1, 2)  # (B, N, D)
        n = tokens.shape[1]
        tokens = tokens + sinusoidal_positions(n, tokens.shape[2]).to(tokens)
        mask = torch.arange(n, device=x.device) * self.stride < lengths[:, None]
        for block in self.blocks:
            tokens = block(tokens, mask)
        return Tokens(self.norm(tokens), mask)


@register_encoder("audio_conv")
def audio_conv(
    dim: int, n_mels: int, sample_rate: int, *, width: int = 64, stride: int = 4, depth: int = 1
) -> ConvAudioEncoder:
    """Log-mel frames to one token per `stride` frames."""
    if stride < 1 or depth < 0:
        raise ValueError("stride must be >= 1 and depth >= 0")
    return ConvAudioEncoder(dim=dim, n_mels=n_mels, width=width, stride=stride, depth=depth)
