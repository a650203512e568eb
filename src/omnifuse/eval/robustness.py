"""MultiBench's robustness protocol: test-time perturbations of one modality at a time, the
accuracy-vs-level sweep, and relative and effective robustness (Liang et al., 2021).

Perturbations act on a collated `Batch` (tensors after preprocessing) and draw every random
number from the `torch.Generator` they are given, so a sweep is repeatable and every model
of a comparison sees the same corrupted inputs. Only valid entries are touched: present
samples, and positions inside each sample's length on the padded last axis.

    curves = sweep(model, samples, collate, "scene")     # {modality: {perturbation: [acc]}}
    relative_robustness(LEVELS_WITH_CLEAN, curves["image"]["gaussian"])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from omnifuse.data.batch import Batch, Collate, Sample
from omnifuse.model import OmnifuseModel

# MultiBench's ten noise levels; level 0 (clean) is prepended for the curves
LEVELS: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(1, 11))
LEVELS_WITH_CLEAN: tuple[float, ...] = (0.0, *LEVELS)

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


def perturbations(kind: str, config: Any = None) -> dict[str, Perturbation]:
    """The perturbations of a modality kind, `missing` for every kind. `config` (the modality's
    config) sets the dropout frame of a waveform to its hop."""
    found: dict[str, Perturbation] = {}
    if kind in ("image", "video"):
        found = {"gaussian": gaussian_noise, "occlusion": occlusion}
    elif kind in ("audio", "timeseries"):
        frame = 1
        if config is not None and getattr(config, "features", None) == "waveform":
            frame = int(config.hop)
        found = {"noise": gaussian_noise, "dropout": partial(frame_dropout, frame=frame)}
    return found | {"missing": missing}


class _Memo(nn.Module):
    """An encoder that remembers its output for the input tensors it has seen (by identity):
    a perturbation leaves the other modalities' tensors as they were, so in a sweep only the
    perturbed modality is encoded again."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.seen: dict[int, tuple[Tensor, Tensor, Any]] = {}

    def forward(self, x: Tensor, lengths: Tensor) -> Any:
        hit = self.seen.get(id(x))
        if hit is not None and hit[0] is x and hit[1] is lengths:
            return hit[2]
        out = self.encoder(x, lengths)
        self.seen[id(x)] = (x, lengths, out)  # holding x keeps its id from being reused
        return out


@contextmanager
def _memoised(model: OmnifuseModel) -> Iterator[None]:
    encoders = dict(model.encoders.items())
    try:
        for name, encoder in encoders.items():
            model.encoders[name] = _Memo(encoder)
        yield
    finally:
        for name, encoder in encoders.items():
            model.encoders[name] = encoder


@torch.no_grad()
def _metric(model: OmnifuseModel, batches: Sequence[Batch], task: str, metric: str) -> float:
    head = model.task_dict()[task]
    predictions, targets = [], []
    for batch in batches:
        keep = head.labelled(batch)
        predictions.append(model(batch).outputs[task][keep])
        targets.append(head.evaluation_target(batch)[keep])
    return head.metrics(torch.cat(predictions), torch.cat(targets))[metric]


@torch.no_grad()
def sweep(
    model: OmnifuseModel,
    samples: Sequence[Sample],
    collate: Collate,
    task: str,
    *,
    metric: str = "accuracy",
    levels: Sequence[float] = LEVELS,
    seed: int = 0,
    batch_size: int = 256,
    perturb_as: Mapping[str, str] | None = None,
    progress: bool = False,
) -> dict[str, dict[str, list[float]]]:
    """`task`'s `metric` with each perturbation of each modality at each level:
    {modality: {perturbation: [clean value, value at levels[0], ...]}}. The random draws of
    curve c at level index i come from a generator seeded with (seed, c, i), so every model
    evaluated with the same seed sees the same perturbed inputs. `perturb_as` perturbs a
    modality as another kind would be (AV-MNIST's spectrogram, read as an image, as audio:
    noise and time-frame dropout on its last axis)."""
    perturb_as = perturb_as or {}
    model.eval()
    batches = [collate(samples[i : i + batch_size]) for i in range(0, len(samples), batch_size)]
    curves = [
        (name, label, perturb)
        for name in sorted(model.modalities)
        for label, perturb in perturbations(
            perturb_as.get(name, model.config.modalities[name].kind),
            model.config.modalities[name],
        ).items()
    ]
    results: dict[str, dict[str, list[float]]] = {}
    bar = tqdm(
        total=len(curves) * len(levels), desc="robustness", disable=not progress, leave=False
    )
    with _memoised(model):
        clean = _metric(model, batches, task, metric)  # remembers every modality's clean tokens
        for c, (name, label, perturb) in enumerate(curves):
            values = [clean]
            for i, level in enumerate(levels):
                generator = torch.Generator().manual_seed(seed * 1_000_003 + c * 1_009 + i)
                noisy = [perturb(b, name, level, generator) for b in batches]
                values.append(_metric(model, noisy, task, metric))
                bar.update()
            results.setdefault(name, {})[label] = values
    bar.close()
    return results


def relative_robustness(levels: Sequence[float], values: Sequence[float]) -> float:
    """The area under the value-vs-level curve (trapezoid rule), levels normalised to [0, 1]
    by the largest: MultiBench's relative robustness (`relative_robustness_helper`: steps of
    0.1 over the clean value and ten levels). `levels` starts at 0, the clean value."""
    if len(levels) != len(values) or len(levels) < 2:
        raise ValueError("relative_robustness: one value per level, at least two levels")
    top = max(levels)
    x = [level / top for level in levels]
    return sum((x[i + 1] - x[i]) * (values[i] + values[i + 1]) / 2 for i in range(len(levels) - 1))


def effective_robustness(
    levels: Sequence[float], values: Sequence[float], reference: Sequence[float]
) -> float:
    """How far a curve stays above the reference's (late fusion's) curve shifted to start at
    the same clean value: the area under f(l) - [r(l) + f(0) - r(0)] (trapezoid, levels
    normalised to [0, 1]), i.e. relative(f) - relative(r) - (f(0) - r(0)).

    This is MultiBench's `effective_robustness_helper` (beta_f = lf + (f[0] - lf[0])), which
    follows Taori et al. (2020): robustness beyond what the baseline's accuracy under noise
    predicts for the same clean accuracy. MultiBench sums the gaps over the 11 points and then
    min-max normalises across the methods compared; this is the same gap integrated like the
    relative robustness, unnormalised. 0 for late fusion itself; > 0 degrades more slowly
    than late fusion."""
    if len(reference) != len(values):
        raise ValueError("effective_robustness: the reference needs one value per level")
    shift = values[0] - reference[0]
    gaps = [v - (r + shift) for v, r in zip(values, reference, strict=True)]
    return relative_robustness(levels, gaps)
