"""Zero-shot classification through an alignment task with a text modality (CLIP-style).

Each class name, optionally set in a prompt template ("a photo of {}"), is read as the text
modality reads a cell, encoded by its encoder and projected by the alignment task; each
sample's embedding of another aligned modality is given the class whose text embedding is
the most similar (cosine). No classifier is trained.

    model = OmnifuseModel.from_pretrained("runs/world")
    result = zero_shot(model, samples, labels, ["forest", "city", "beach"], prompt="a {}")
    print(result.accuracy)  # {"image": 0.81}
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from omnifuse.data.dataset import Readers
from omnifuse.errors import OmnifuseError
from omnifuse.interfaces import Sample
from omnifuse.layers.attention import masked_mean
from omnifuse.model import OmnifuseModel
from omnifuse.tasks.alignment import Alignment, aligned_task

PLACEHOLDER = "{}"


@dataclass
class ZeroShot:
    """Zero-shot results of one alignment task: per classified modality, the accuracy over the
    samples having that modality and a label, how many those are, and each sample's predicted
    class (None where the sample lacks the modality)."""

    task: str
    text: str  # the text modality the class names were read as
    classes: list[str]
    prompt: str
    accuracy: dict[str, float]
    samples: dict[str, int]
    predictions: dict[str, list[str | None]]


def text_alignment(
    model: OmnifuseModel, task: str | None = None, text: str | None = None
) -> tuple[Alignment, str]:
    """The alignment task (the only one with a text modality, or `task`) and its text modality
    (the only one, or `text`) that zero-shot classification reads class names through."""
    kinds = {name: m.config.kind for name, m in model.modalities.items()}
    chosen = aligned_task(
        model.task_dict(),
        task,
        where=lambda t: any(kinds[m] == "text" for m in t.between),
        what="alignment task with a text modality",
    )
    task = chosen.name
    texts = [m for m in chosen.between if kinds[m] == "text"]
    if text is None:
        if len(texts) > 1:
            raise OmnifuseError(
                f"task '{task}' aligns several text modalities; pick one of {texts}"
            )
        text = texts[0]
    if text not in texts:
        raise OmnifuseError(f"'{text}' is not a text modality of task '{task}'; it has {texts}")
    return chosen, text


@torch.no_grad()
def embed_texts(model: OmnifuseModel, task: Alignment, text: str, values: Sequence[str]) -> Tensor:
    """(C, E) normalised embeddings of `values` read as the text modality `text` reads a cell,
    through its encoder and `task`'s projection."""
    model.eval()
    modality = model.modalities[text]
    samples = [
        Sample(
            id=value,
            inputs={
                name: modality.load_value(value, Path.cwd()) if name == text else None
                for name in model.modalities
            },
        )
        for value in values
    ]
    batch = Readers.of(model.config).collate()(samples)
    tokens = model.encode(batch)[text]
    return task.project(text, masked_mean(tokens.tokens, tokens.mask)).cpu()


@torch.no_grad()
def zero_shot(
    model: OmnifuseModel,
    samples: Sequence[Sample],
    labels: Sequence[str | None],
    classes: Sequence[str],
    *,
    prompt: str = PLACEHOLDER,
    task: str | None = None,
    text: str | None = None,
    batch_size: int = 256,
) -> ZeroShot:
    """Classify every sample's embedding of each non-text modality of the alignment task by
    its most similar class name embedding; `labels` (the true class name per sample, None for
    none) give the accuracy. `prompt` holds `{}` where the class name goes."""
    if PLACEHOLDER not in prompt:
        raise OmnifuseError(f"prompt {prompt!r}: put {PLACEHOLDER} where the class name goes")
    if len(classes) < 2:
        raise OmnifuseError(f"zero-shot classification needs two or more classes, got {classes}")
    if len(labels) != len(samples):
        raise OmnifuseError(f"{len(labels)} labels for {len(samples)} samples")
    alignment, text = text_alignment(model, task, text)
    names = list(classes)
    class_embeddings = embed_texts(
        model, alignment, text, [prompt.replace(PLACEHOLDER, c) for c in names]
    )  # (C, E)
    others = [m for m in alignment.between if m != text]
    predictions: dict[str, list[str | None]] = {m: [] for m in others}
    collate = Readers.of(model.config).collate()
    for start in range(0, len(samples), batch_size):
        batch = collate(samples[start : start + batch_size])
        embedded = model(batch).outputs[alignment.name].cpu()  # (B, M, E)
        for m in others:
            best = (embedded[:, alignment.between.index(m)] @ class_embeddings.T).argmax(1)
            predictions[m] += [
                names[c] if here else None
                for c, here in zip(best.tolist(), batch.present[m].tolist(), strict=True)
            ]
    accuracy, counts = {}, {}
    for m in others:
        scored = [
            (p, y)
            for p, y in zip(predictions[m], labels, strict=True)
            if p is not None and y is not None
        ]
        counts[m] = len(scored)
        accuracy[m] = sum(p == y for p, y in scored) / len(scored) if scored else float("nan")
    return ZeroShot(alignment.name, text, names, prompt, accuracy, counts, predictions)
