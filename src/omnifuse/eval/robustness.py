"""MultiBench's robustness protocol: test-time perturbations of one modality at a time, the
accuracy-vs-level sweep, and relative and effective robustness (Liang et al., 2021).

Each modality kind names its perturbations (`Modality.perturbations`, built from
`omnifuse.modalities.perturbations`); every kind also gets `missing`.

    curves = sweep(model, samples, collate, "scene")     # {modality: {perturbation: [acc]}}
    relative_robustness(LEVELS_WITH_CLEAN, curves["image"]["gaussian"])
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from omnifuse.interfaces import Batch, Collate, Sample
from omnifuse.modalities.base import Modality
from omnifuse.modalities.perturbations import Perturbation, missing
from omnifuse.model import OmnifuseModel
from omnifuse.registry import KINDS, create_modality

# MultiBench's ten noise levels; level 0 (clean) is prepended for the curves
LEVELS: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(1, 11))
LEVELS_WITH_CLEAN: tuple[float, ...] = (0.0, *LEVELS)


def perturbations(modality: Modality, kind: str | None = None) -> dict[str, Perturbation]:
    """The perturbations of `modality`, or those of another `kind` (its default config) for
    a modality read as one kind and perturbed as another; `missing` for every kind."""
    if kind is not None and kind != modality.config.kind:
        config = KINDS.info(kind)["config"](kind=kind)
        modality = create_modality(modality.name, config)
    return modality.perturbations() | {"missing": missing}


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
        predictions.append(model(batch).outputs[task].cpu()[keep])
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
        for label, perturb in perturbations(model.modalities[name], perturb_as.get(name)).items()
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
