"""The run report: per-modality ablation, retrieval examples with thumbnails, and a
Markdown page tying them to the metrics and plots."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from omnifuse.eval.evaluate import evaluate
from omnifuse.interfaces import Collate, Sample
from omnifuse.manifest import Manifest
from omnifuse.model import OmnifuseModel
from omnifuse.tasks.alignment import Alignment
from omnifuse.tasks.generation import Generation

REPORT_FILE = "report.md"


def modality_ablation(
    model: OmnifuseModel, samples: Sequence[Sample], collate: Collate
) -> dict[str, dict[str, dict[str, float]]]:
    """{modality: {task: {metric: value}}} with that modality made absent in every sample."""
    results = {}
    for modality in sorted(model.modalities):
        removed = [replace(s, inputs={**s.inputs, modality: None}) for s in samples]
        results[modality] = evaluate(model, removed, collate)
    return results


@torch.no_grad()
def plot_retrieval_examples(
    model: OmnifuseModel,
    task: Alignment,
    manifest: Manifest,
    rows: Sequence[int],
    samples: Sequence[Sample],
    collate: Collate,
    path: Path,
    *,
    queries: int = 6,
    top: int = 3,
) -> bool:
    """For an alignment of an image and a text modality (the first of each kind among
    `between`): image queries with their top captions among the evaluation samples having
    both (the true one marked). Returns False when the task aligns no image with a text."""
    kinds = {m: model.config.modalities[m].kind for m in task.between}
    image = next((m for m, k in kinds.items() if k == "image"), None)
    text = next((m for m, k in kinds.items() if k == "text"), None)
    if image is None or text is None:
        return False
    both = [
        i
        for i, s in enumerate(samples)
        if s.inputs[image] is not None and s.inputs[text] is not None
    ]
    if len(both) < top:
        return False
    model.eval()
    embedded = torch.cat(
        [
            model(collate([samples[i] for i in both[k : k + 256]])).outputs[task.name].cpu()
            for k in range(0, len(both), 256)
        ]
    )  # (N, M, E), `between` in sorted order
    first, second = task.between.index(image), task.between.index(text)
    scores = embedded[:, first] @ embedded[:, second].T  # image i vs caption j
    cells = [manifest.rows[rows[i]] for i in both]
    image_column = model.modalities[image].column
    text_column = model.modalities[text].column
    shown = both[: min(queries, len(both))]
    fig, axes = plt.subplots(
        len(shown),
        2,
        figsize=(9, 1.6 * len(shown)),
        squeeze=False,
        gridspec_kw={"width_ratios": [1, 4]},
    )
    for row, index in enumerate(range(len(shown))):
        picture, words = axes[row]
        # read as the model reads it (the dataset folder, the pixel limit, every mode)
        pixels = model.modalities[image].read(cells[index][image_column], manifest.root)
        picture.imshow(pixels.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=1)
        picture.axis("off")
        words.axis("off")
        best = scores[index].topk(top).indices.tolist()
        for rank, j in enumerate(best):
            colour = "green" if j == index else "black"
            mark = " (true)" if j == index else ""
            words.text(
                0,
                0.8 - 0.3 * rank,
                f"{rank + 1}. {cells[j][text_column]}{mark}",
                color=colour,
                fontsize=8,
                transform=words.transAxes,
            )
    fig.suptitle(f"{task.name}: image -> text, top {top} of {len(both)} captions", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


@torch.no_grad()
def generation_examples(
    model: OmnifuseModel, samples: Sequence[Sample], collate: Collate, *, count: int = 5
) -> dict[str, list[dict[str, str]]]:
    """{task: [{reference, generated}]} for the first `count` labelled samples of each
    generation task."""
    tasks = {n: t for n, t in model.task_dict().items() if isinstance(t, Generation)}
    if not tasks:
        return {}
    batch = collate(list(samples[: 8 * count]))
    outputs = model.eval()(batch).outputs
    examples = {}
    for name, task in tasks.items():
        chosen = task.labelled(batch).nonzero()[:count, 0].tolist()
        examples[name] = [
            {
                "reference": task.describe(batch.targets[name][i]),
                "generated": task.describe(outputs[name][i]),
            }
            for i in chosen
        ]
    return examples


def write_report(out: Path, metrics: dict[str, Any], figures: Sequence[str]) -> Path:
    """`out/report.md`: metrics, ablation, baselines and the figures, as Markdown."""
    splits = " / ".join(f"{n} {name}" for name, n in metrics["splits"].items())
    lines = [
        "# omnifuse run report",
        "",
        f"Samples: {splits}. Metrics on the {metrics['evaluated_on']} split; trained in "
        f"{metrics['train_seconds']} s. The resolved config is `config.json`.",
        "",
    ]
    columns = {"model": metrics["tasks"]}
    columns |= {f"without {m}": v for m, v in metrics.get("ablation", {}).items()}
    columns |= {f"only {m}": v["tasks"] for m, v in metrics.get("baselines", {}).items()}
    lines += [
        "## Metrics",
        "",
        "| task / metric | " + " | ".join(columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    for task, values in metrics["tasks"].items():
        for key in values:
            cells = [_cell(c.get(task, {}).get(key)) for c in columns.values()]
            lines.append(f"| {task} / {key} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "*without m*: the trained model with modality m absent from every sample. "
        "*only m*: a model trained on modality m alone.",
        "",
    ]
    for task, examples in metrics.get("examples", {}).items():
        lines += [f"## Generated examples: {task}", "", "| reference | generated |", "|---|---|"]
        lines += [f"| {_text(e['reference'])} | {_text(e['generated'])} |" for e in examples]
        lines.append("")
    lines += ["## Figures", ""] + [f"![{name}]({name})" for name in figures] + [""]
    path = out / REPORT_FILE
    path.write_text("\n".join(lines))
    return path


def _text(text: str) -> str:
    """Text as one Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|") or " "


def _cell(value: float | None) -> str:
    """A table cell: '-' where the metric was not computed, 'n/a' where it is undefined
    (e.g. retrieval with one side removed)."""
    if value is None:
        return "-"
    return "n/a" if math.isnan(value) else f"{value:.4f}"
