"""MultiBench's test-time perturbations, on collated batches: the kinds choose theirs
(`Modality.perturbations`), `missing` applies to every kind.

Each draws every random number from the `torch.Generator` it is given, so a sweep is
repeatable and every model of a comparison sees the same corrupted inputs. Only valid entries
are touched: present samples, and positions inside each sample's length on the padded last
axis.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import torch
from torch import Tensor

from omnifuse.interfaces import Batch

Perturbation = Callable[[Batch, str, float, torch.Generator], Batch]


def _valid(batch: Batch, modality: str) -> Tensor:
    """Bool mask of the shape of `inputs[modality]`: True on present samples, inside their
    length on the (padded) last axis."""
    x = batch.inputs[modality]
    inside = torch.arange(x.shape[-1]) < batch.lengths[modality][:, None]  # (B, L)
    valid = inside & batch.present[modality][:, None]
    return valid.reshape(x.shape[0], *([1] * (x.ndim - 2)), x.shape[-1]).expand_as(x)


def _with_input(batch: Batch, modality: str, value: Tensor) -> Batch:
    return replace(batch, inputs={**batch.inputs, modality: value})


def gaussian_noise(batch: Batch, modality: str, level: float, generator: torch.Generator) -> Batch:
    """Additive Gaussian noise whose standard deviation is `level` times each sample's own
    standard deviation (over its valid entries). Images: MultiBench's Gaussian noise; audio
    spectrograms, waveforms and series: its additive noise."""
    if level <= 0:
        return batch
    x = batch.inputs[modality]
    if not x.is_floating_point():
        raise ValueError(f"'{modality}': additive noise needs float inputs, got {x.dtype}")
    valid = _valid(batch, modality)
    weight = valid.to(x.dtype).flatten(1)
    count = weight.sum(1).clamp(min=1)
    flat = x.flatten(1)
    mean = (flat * weight).sum(1) / count
    std = (((flat - mean[:, None]) ** 2 * weight).sum(1) / count).sqrt()  # (B,)
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
    scale = (level * std).reshape(-1, *([1] * (x.ndim - 1)))
    return _with_input(batch, modality, torch.where(valid, x + scale * noise, x))


def occlusion(batch: Batch, modality: str, level: float, generator: torch.Generator) -> Batch:
    """A random rectangle covering a fraction `level` of each image (the last two axes: a
    square for square images, every channel and frame) set to 0, which after the fitted or
    ImageNet normalisation is the mean colour."""
    if level <= 0:
        return batch
    x = batch.inputs[modality]
    height, width = x.shape[-2:]
    side = math.sqrt(min(level, 1.0))
    h, w = max(1, round(side * height)), max(1, round(side * width))
    top = torch.randint(0, height - h + 1, (x.shape[0],), generator=generator)
    left = torch.randint(0, width - w + 1, (x.shape[0],), generator=generator)
    rows = torch.arange(height)[None, :] - top[:, None]  # (B, H)
    cols = torch.arange(width)[None, :] - left[:, None]  # (B, W)
    box = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
    box = box & batch.present[modality][:, None, None]  # (B, H, W)
    box = box.reshape(x.shape[0], *([1] * (x.ndim - 3)), height, width)
    return _with_input(batch, modality, x.masked_fill(box, 0.0))


def frame_dropout(
    batch: Batch, modality: str, level: float, generator: torch.Generator, *, frame: int = 1
) -> Batch:
    """Each time frame (a step of the last axis, or `frame` consecutive steps: a waveform's
    hop) zeroed with probability `level`; 0 is the mean level of a normalised spectrogram or
    series, and silence for a waveform."""
    if level <= 0:
        return batch
    x = batch.inputs[modality]
    frames = -(-x.shape[-1] // frame)
    dropped = torch.rand(x.shape[0], frames, generator=generator) < level  # (B, frames)
    dropped = dropped.repeat_interleave(frame, dim=1)[:, : x.shape[-1]]
    dropped = dropped.reshape(x.shape[0], *([1] * (x.ndim - 2)), x.shape[-1])
    dropped = dropped & _valid(batch, modality)
    return _with_input(batch, modality, x.masked_fill(dropped, 0.0))


def missing(batch: Batch, modality: str, level: float, generator: torch.Generator) -> Batch:
    """The modality made absent (present False, lengths 0, zero inputs: what the collate gives
    an absent cell) in a random fraction `level` of the samples; at level 1 in every sample.
    A sample in which it is the only modality present keeps it: no sample is left with
    nothing."""
    if level <= 0:
        return batch
    here = batch.present[modality]
    others = torch.zeros_like(here)
    for name, flags in batch.present.items():
        if name != modality:
            others |= flags
    drop = (torch.rand(here.shape, generator=generator) < level) & here & others
    x = batch.inputs[modality]
    keep = ~drop.reshape(-1, *([1] * (x.ndim - 1)))
    return replace(
        batch,
        inputs={**batch.inputs, modality: x * keep.to(x.dtype)},
        lengths={**batch.lengths, modality: batch.lengths[modality].masked_fill(drop, 0)},
        present={**batch.present, modality: here & ~drop},
    )
