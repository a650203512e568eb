"""Samples, batches and the collate that pads variable lengths and marks absent modalities."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class Sample:
    """One manifest row, preprocessed: None marks an absent modality or a missing label."""

    id: str
    inputs: dict[str, Tensor | None]
    targets: dict[str, Tensor | None] = field(default_factory=dict)

    def only(self, modalities: Sequence[str]) -> Sample:
        """The same sample seeing only `modalities`."""
        return replace(self, inputs={m: self.inputs[m] for m in modalities})


@dataclass
class Batch:
    """Collated samples. Every dict is keyed by modality (inputs) or task (targets).

    inputs[m]: (B, ...) zero-padded on the last axis; lengths[m]: (B,) unpadded sizes on that
    axis, 0 where absent; present[m]: (B,) bool. targets[t]: (B, ...), sequences (token ids)
    zero-padded on the last axis like inputs; labelled[t]: (B,) bool.
    """

    ids: list[str]
    inputs: dict[str, Tensor]
    lengths: dict[str, Tensor]
    present: dict[str, Tensor]
    targets: dict[str, Tensor]
    labelled: dict[str, Tensor]

    def __len__(self) -> int:
        return len(self.ids)


def _stack(values: list[Tensor | None], template: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Stack present tensors, padding the last axis; absent entries become zeros."""
    present = torch.tensor([v is not None for v in values])
    sizes = [v.shape[-1] if v is not None else 0 for v in values]
    width = max(sizes) if any(sizes) else template.shape[-1]
    filled = [
        F.pad(v, (0, width - v.shape[-1]))
        if v is not None
        else template.new_zeros((*template.shape[:-1], width))
        for v in values
    ]
    return torch.stack(filled), torch.tensor(sizes), present


class Collate:
    """Collate function for a DataLoader.

    `templates` holds one example tensor per modality and target, so that a batch in which
    every sample lacks a modality still gets a tensor of the right rank and dtype.
    """

    def __init__(self, templates: Mapping[str, Tensor], target_templates: Mapping[str, Tensor]):
        self.templates = dict(templates)
        self.target_templates = dict(target_templates)

    def __call__(self, samples: Sequence[Sample]) -> Batch:
        inputs, lengths, present = {}, {}, {}
        for name in sorted(samples[0].inputs):
            values = [s.inputs[name] for s in samples]
            inputs[name], lengths[name], present[name] = _stack(values, self.templates[name])
        targets, labelled = {}, {}
        for name in sorted(samples[0].targets):
            template = self.target_templates[name]
            values = [s.targets[name] for s in samples]
            if template.ndim:  # sequences (token ids): zero-padded on the last axis
                targets[name], _, labelled[name] = _stack(values, template)
                continue
            targets[name] = torch.stack(
                [v if v is not None else torch.zeros_like(template) for v in values]
            )
            labelled[name] = torch.tensor([v is not None for v in values])
        return Batch([s.id for s in samples], inputs, lengths, present, targets, labelled)
