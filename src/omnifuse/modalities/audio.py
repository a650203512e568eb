"""Audio: WAV/FLAC read with soundfile, mono, resampled, log-mel in torch; a convolutional and
a spectrogram-patch encoder."""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from functools import cache, partial
from pathlib import Path
from typing import Any, Literal

import soundfile
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from omnifuse.config import Component, ModalityConfig
from omnifuse.errors import ConfigError, DataError
from omnifuse.interfaces import Tokens
from omnifuse.layers.attention import SelfAttentionBlock, sinusoidal_positions
from omnifuse.manifest import Manifest
from omnifuse.modalities.base import Modality
from omnifuse.modalities.perturbations import Perturbation, frame_dropout, gaussian_noise
from omnifuse.registry import create_encoder, register_encoder, register_kind


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


def resample(wave: Tensor, rate: int, target: int, *, zeros: int = 16) -> Tensor:
    """Band-limited resampling: each output sample is a Hann-windowed sinc interpolation of
    the input with `zeros` zero crossings each side, low-passed at the lower Nyquist rate."""
    if rate == target:
        return wave
    cutoff = min(1.0, target / rate)  # of the input's Nyquist frequency
    half = math.ceil(zeros / cutoff)  # kernel half-width in input samples
    taps = torch.arange(-half + 1, half + 1)
    frames = max(1, round(wave.shape[0] * target / rate))
    out = []
    for start in range(0, frames, 16384):  # in blocks, to bound the (frames, taps) tables
        stop = min(frames, start + 16384)
        position = torch.arange(start, stop, dtype=torch.float64) * (rate / target)
        index = position.floor().long()[:, None] + taps  # (block, taps) input samples
        distance = (position[:, None] - index).float()
        window = 0.5 + 0.5 * torch.cos(torch.pi * distance / half)
        kernel = cutoff * torch.sinc(cutoff * distance) * window
        inside = (index >= 0) & (index < wave.shape[0])
        values = wave[index.clamp(0, wave.shape[0] - 1)] * inside
        out.append((values * kernel).sum(dim=1))
    return torch.cat(out)


def wav_shortfall(path: Path) -> tuple[int, int] | None:
    """(declared, present) sample bytes when a RIFF/WAVE file's data chunk is cut short, else
    None. libsndfile reads a truncated WAV without complaint, so check its header."""
    with path.open("rb") as file:
        header = file.read(12)
        if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
            return None
        while chunk := file.read(8):
            if len(chunk) < 8:
                return None
            name, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if name == b"data":
                present = path.stat().st_size - file.tell()
                return (size, present) if present < size else None
            file.seek(size + size % 2, 1)
    return None


class AudioConfig(ModalityConfig):
    """A WAV/FLAC file per row: mono, resampled to `sample_rate`, cut to `max_seconds` (only
    that much of the file is decoded); as a log-mel spectrogram (n_mels, frames), or as the raw
    waveform (samples,) for encoders that take one (wav2vec2-style)."""

    kind: Literal["audio"] = "audio"
    column: str | None = None
    sample_rate: int = Field(16000, ge=1000)
    max_seconds: float = Field(1.0, gt=0)
    n_mels: int = Field(64, ge=8)
    n_fft: int = Field(400, ge=16)
    hop: int = Field(160, ge=1)
    features: Literal["log_mel", "waveform"] = "log_mel"
    encoder: Component = Component(type="audio_conv")
    mean: float | None = None  # log-mel statistics, fitted on the training split
    std: float | None = None


@register_kind("audio", config=AudioConfig)
class AudioModality(Modality[AudioConfig]):
    suffixes = (".wav", ".flac", ".ogg", ".aiff", ".aif")

    def perturbations(self) -> dict[str, Perturbation]:
        """Additive noise and time-frame dropout (a waveform's frame is its hop)."""
        frame = self.config.hop if self.config.features == "waveform" else 1
        return {"noise": gaussian_noise, "dropout": partial(frame_dropout, frame=frame)}

    def read(self, value: Any, root: Path) -> Tensor:
        """The file's first `max_seconds` as the configured features, unnormalised. Only the
        frames those need are decoded (and 20 ms more for the resampling kernel at the edge),
        so memory is bounded by `max_seconds`, not by the file's length."""
        path = self.resolve(value, root)
        try:
            with soundfile.SoundFile(path) as file:
                rate = file.samplerate
                keep = math.ceil(self.config.max_seconds * rate) + rate // 50
                data = file.read(keep, dtype="float32", always_2d=True)  # (frames, channels)
            shortfall = wav_shortfall(path)
        except (soundfile.LibsndfileError, RuntimeError, OSError) as error:
            raise DataError(f"column '{self.column}': cannot read audio {value}: {error}") from None
        if shortfall is not None:
            raise DataError(
                f"column '{self.column}': audio {value} is truncated: its header declares "
                f"{shortfall[0]} bytes of samples, the file holds {shortfall[1]}"
            )
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

    def fit(self, manifest: Manifest, rows: Sequence[int], *, files: int = 256) -> AudioConfig:
        if self.config.features == "waveform":
            return self.config
        spectra = self.read_some(manifest, rows, files)
        if not spectra:
            return self.config
        frames = torch.cat([s.flatten() for s in spectra])
        return self.config.model_copy(
            update={"mean": frames.mean().item(), "std": max(frames.std().item(), 1e-3)}
        )

    def template(self) -> Tensor:
        return (
            torch.zeros(1)
            if self.config.features == "waveform"
            else torch.zeros(self.config.n_mels, 1)
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


@register_encoder("audio_conv", kinds=("audio",))
def audio_conv(
    dim: int, n_mels: int, sample_rate: int, *, width: int = 64, stride: int = 4, depth: int = 1
) -> ConvAudioEncoder:
    """Log-mel frames to one token per `stride` frames."""
    if stride < 1 or depth < 0:
        raise ConfigError(f"audio_conv: stride ({stride}) must be >= 1 and depth ({depth}) >= 0")
    return ConvAudioEncoder(dim=dim, n_mels=n_mels, width=width, stride=stride, depth=depth)


class PatchAudioEncoder(nn.Module):
    """ViT-style over the spectrogram (AST-like): non-overlapping mel x time patches, with a
    learned position per mel band and sinusoidal positions over time (any length)."""

    def __init__(
        self, *, dim: int, n_mels: int, patch_mels: int, patch_frames: int, depth: int, heads: int
    ) -> None:
        super().__init__()
        self.patch_mels, self.patch_frames = patch_mels, patch_frames
        self.bands = math.ceil(n_mels / patch_mels)
        self.embed = nn.Conv2d(
            1, dim, (patch_mels, patch_frames), stride=(patch_mels, patch_frames)
        )
        self.band_position = nn.Parameter(torch.randn(self.bands, 1, dim) * 0.02)
        self.blocks = nn.ModuleList(SelfAttentionBlock(dim=dim, heads=heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, lengths: Tensor) -> Tokens:
        # x: (B, n_mels, frames); pad both axes to whole patches, at least one in time
        frames = max(math.ceil(x.shape[-1] / self.patch_frames), 1) * self.patch_frames
        x = F.pad(x, (0, frames - x.shape[-1], 0, self.bands * self.patch_mels - x.shape[1]))
        grid = self.embed(x[:, None])  # (B, D, bands, steps)
        steps = grid.shape[-1]
        time = sinusoidal_positions(steps, grid.shape[1]).to(grid)  # (steps, D)
        tokens = grid.permute(0, 2, 3, 1) + self.band_position + time  # (B, bands, steps, D)
        tokens = tokens.flatten(1, 2)  # (B, bands * steps, D), band-major
        valid = torch.arange(steps, device=x.device) * self.patch_frames < lengths[:, None]
        mask = valid.repeat(1, self.bands)  # (B, bands * steps)
        for block in self.blocks:
            tokens = block(tokens, mask)
        return Tokens(self.norm(tokens), mask)


@register_encoder("audio_patch", kinds=("audio",))
def audio_patch(
    dim: int,
    n_mels: int,
    sample_rate: int,
    *,
    patch_mels: int = 16,
    patch_frames: int = 8,
    depth: int = 2,
    heads: int = 4,
) -> PatchAudioEncoder:
    """Log-mel spectrogram patches of `patch_mels` x `patch_frames`: ceil(n_mels / patch_mels)
    tokens per `patch_frames` frames, masked beyond each clip's length."""
    if patch_mels < 1 or patch_frames < 1:
        raise ConfigError("audio_patch: patch_mels and patch_frames must be >= 1")
    return PatchAudioEncoder(
        dim=dim,
        n_mels=n_mels,
        patch_mels=patch_mels,
        patch_frames=patch_frames,
        depth=depth,
        heads=heads,
    )
