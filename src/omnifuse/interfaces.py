"""The types that pass between omnifuse's parts: every layer above imports them from here.

    Sample (one preprocessed manifest row) -> Collate -> Batch (dicts keyed by modality)
    encoder(inputs[m], lengths[m]) -> Tokens (tokens, mask)
    fusion({m: Tokens}) -> Fused (tokens, mask, pooled; late fusion: parts and weights)

An encoder is any `nn.Module` whose forward takes `(x (B, ...), lengths (B,))` and returns
`Tokens`; a fusion strategy is any `nn.Module` whose forward takes `{modality: Tokens}` (read
in sorted key order, never a masked token) and returns `Fused`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class Tokens:
    """An encoder's output: `tokens` (B, N, D) and `mask` (B, N), True where a token is real."""

    tokens: Tensor
    mask: Tensor


@dataclass
class Fused:
    """`tokens` (B, L, D) with `mask` (B, L), and a `pooled` (B, D) summary.

    A strategy that yields only a vector returns it as a single token. Late fusion also sets
    `parts` (one Fused per modality, read by that modality alone) and `weights` (B,) per part,
    summing to 1 over a sample's parts and 0 where the modality is absent: the model then
    decodes every task on every part and averages the predictions (`combine`), so no head ever
    sees two modalities at once.
    """

    tokens: Tensor
    mask: Tensor
    pooled: Tensor
    parts: dict[str, Fused] | None = None
    weights: dict[str, Tensor] | None = None

    def select(self, rows: Tensor) -> Fused:
        """The fused result of samples `rows` (a long index; may repeat samples, as for beams)."""
        return Fused(
            self.tokens[rows],
            self.mask[rows],
            self.pooled[rows],
            None if self.parts is None else {n: p.select(rows) for n, p in self.parts.items()},
            None if self.weights is None else {n: w[rows] for n, w in self.weights.items()},
        )

    def combine(self, decode: Callable[[Fused], dict[str, Tensor]]) -> dict[str, Tensor]:
        """`decode(self)`, or for a late fusion the weighted mean of `decode(part)` over parts.

        A part whose weight is 0 (its modality absent) adds exactly nothing.
        """
        if self.parts is None or self.weights is None:
            return decode(self)
        combined: dict[str, Tensor] = {}
        for name in sorted(self.parts):
            weight = self.weights[name]
            for key, prediction in decode(self.parts[name]).items():
                w = weight.reshape(-1, *([1] * (prediction.ndim - 1))).to(prediction.dtype)
                term = torch.where(w > 0, w * prediction, torch.zeros_like(prediction))
                combined[key] = combined[key] + term if key in combined else term
        return combined


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

    def pin_memory(self) -> Batch:
        """The batch in page-locked memory (a DataLoader's `pin_memory` calls this)."""
        return self._map(lambda t: t.pin_memory())

    def to(self, device: torch.device) -> Batch:
        """The batch with every tensor on `device`; itself when they are all there already."""
        tables = (self.inputs, self.lengths, self.present, self.targets, self.labelled)
        if all(t.device == device for table in tables for t in table.values()):
            return self

        return self._map(lambda t: t.to(device, non_blocking=device.type == "cuda"))

    def _map(self, change: Callable[[Tensor], Tensor]) -> Batch:
        def each(table: dict[str, Tensor]) -> dict[str, Tensor]:
            return {k: change(v) for k, v in table.items()}

        return replace(
            self,
            inputs=each(self.inputs),
            lengths=each(self.lengths),
            present=each(self.present),
            targets=each(self.targets),
            labelled=each(self.labelled),
        )


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
