"""Text generation on the generated world: captioning and question answering, with baselines.

    python benchmarks/generation_world.py [--only caption,vqa] [--epochs N] [--threads 2]
                                          [--json runs/generation_world.json]

(a) Captioning (`world-caption.yaml` beside this script): the image -> the `caption` column.
Baselines: the caption of the nearest training sample, by cosine similarity of the pixels as
the model reads them (normalised per channel) and of the trained model's pooled fused
embedding. (b) Question answering (`world-vqa.yaml`): the image and the `question` -> the
`answer` column. Baselines: the training split's majority answer, and the majority answer per
question type (the question with its object words removed). Every figure is on the test
split's labelled samples; the model is trained through `omnifuse.train.run.prepare/train`
and evaluated with greedy decoding and with beam search (4 beams).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from omnifuse.config import load_config
from omnifuse.data.world import COLOURS, SHAPES, SIZES
from omnifuse.eval.evaluate import evaluate
from omnifuse.fusion.base import count_parameters
from omnifuse.metrics import text_metrics
from omnifuse.model import OmnifuseModel
from omnifuse.tasks.generation import Generation
from omnifuse.train.run import Prepared, prepare, train

HERE = Path(__file__).parent
CONFIGS = {"caption": HERE / "world-caption.yaml", "vqa": HERE / "world-vqa.yaml"}
TARGETS = {"caption": "caption", "vqa": "answer"}


def texts(prepared: Prepared, split: str, column: str) -> list[str | None]:
    """The raw cells of `column` for the samples of `split`, in sample order."""
    return [prepared.manifest.rows[i].get(column) for i in prepared.rows[split]]


@torch.no_grad()
def pooled(model: OmnifuseModel, prepared: Prepared, split: str) -> torch.Tensor:
    """(N, D) the model's pooled fused embedding of each sample of `split`."""
    model.eval()
    samples = prepared.splits[split]
    return torch.cat(
        [
            model(prepared.collate(samples[k : k + 256])).fused.pooled
            for k in range(0, len(samples), 256)
        ]
    )


def nearest_captions(
    train: torch.Tensor, test: torch.Tensor, captions: Sequence[str | None]
) -> list[str]:
    """For each test row, the caption of the most cosine-similar training row that has one."""
    has = torch.tensor([c is not None for c in captions])
    scores = F.normalize(test.flatten(1), dim=1) @ F.normalize(train.flatten(1), dim=1).T
    scores[:, ~has] = float("-inf")
    return [str(captions[j]) for j in scores.argmax(1).tolist()]


def question_type(question: str) -> str:
    words = set(COLOURS) | set(SHAPES) | set(SIZES)
    return " ".join(w for w in question.rstrip("?").split() if w not in words)


def model_runs(prepared: Prepared, name: str) -> tuple[OmnifuseModel, dict[str, Any]]:
    trained = train(prepared, progress=False)
    task = trained.model.task_dict()[name]
    assert isinstance(task, Generation)
    split = prepared.evaluation
    greedy = trained.metrics[name]
    task.decoding, task.beam_size = "beam", 4
    start = time.perf_counter()
    beam = evaluate(trained.model, prepared.splits[split], prepared.collate)[name]
    beam_seconds = time.perf_counter() - start
    task.decoding = "greedy"
    row = {
        "model (greedy)": greedy,
        "model (beam 4)": beam,
        "train_seconds": round(trained.train_seconds, 1),
        "beam_eval_seconds": round(beam_seconds, 1),
        "parameters": count_parameters(trained.model),
        "epochs": prepared.config.train.epochs,
    }
    return trained.model, row


def caption(prepared: Prepared) -> dict[str, Any]:
    model, row = model_runs(prepared, "caption")
    split = prepared.evaluation
    train_captions = texts(prepared, "train", "caption")
    references = texts(prepared, split, "caption")
    labelled = [i for i, r in enumerate(references) if r is not None]
    refs = [str(references[i]) for i in labelled]

    def images(name: str) -> torch.Tensor:
        """(N, 3, H, W) as the model reads them; zeros (similar to nothing) where absent."""
        cells = [s.inputs["image"] for s in prepared.splits[name]]
        blank = torch.zeros_like(next(c for c in cells if c is not None))
        return torch.stack([blank if c is None else c for c in cells])

    # a training sample without an image is never a neighbour by pixels
    pixels = [s.inputs["image"] is not None for s in prepared.splits["train"]]
    by_pixels = nearest_captions(
        images("train")[pixels],
        images(split)[labelled],
        [c for c, p in zip(train_captions, pixels, strict=True) if p],
    )
    by_embedding = nearest_captions(
        pooled(model, prepared, "train"), pooled(model, prepared, split)[labelled], train_captions
    )
    row["nearest caption (pixels)"] = text_metrics(by_pixels, refs)
    row["nearest caption (fused embedding)"] = text_metrics(by_embedding, refs)
    row["examples"] = [
        {"reference": refs[k], "generated": g}
        for k, g in enumerate(generated(model, prepared, "caption", labelled[:6]))
    ]
    return row


def generated(
    model: OmnifuseModel, prepared: Prepared, name: str, indices: Sequence[int]
) -> list[str]:
    task = model.task_dict()[name]
    batch = prepared.collate([prepared.splits[prepared.evaluation][i] for i in indices])
    with torch.no_grad():
        ids = model.eval()(batch).outputs[name]
    return [task.describe(i) for i in ids]


def vqa(prepared: Prepared) -> dict[str, Any]:
    model, row = model_runs(prepared, "answer")
    split = prepared.evaluation
    answers = [a for a in texts(prepared, "train", "answer") if a is not None]
    questions = texts(prepared, "train", "question")
    majority = Counter(answers).most_common(1)[0][0]
    per_type: dict[str, Counter[str]] = {}
    for q, a in zip(questions, texts(prepared, "train", "answer"), strict=True):
        if q is not None and a is not None:
            per_type.setdefault(question_type(str(q)), Counter())[str(a)] += 1
    test_q = texts(prepared, split, "question")
    test_a = texts(prepared, split, "answer")
    labelled = [i for i, a in enumerate(test_a) if a is not None]
    refs = [str(test_a[i]) for i in labelled]
    by_type = []
    for i in labelled:
        counts = per_type.get(question_type(str(test_q[i] or "")))
        by_type.append(counts.most_common(1)[0][0] if counts else majority)
    row["majority answer"] = text_metrics([majority] * len(refs), refs)
    row["majority answer per question type"] = text_metrics(by_type, refs)
    row["question_types"] = len(per_type)
    shown = labelled[:6]
    row["examples"] = [
        {"question": test_q[i], "reference": test_a[i], "generated": g}
        for i, g in zip(shown, generated(model, prepared, "answer", shown), strict=True)
    ]
    return row


def table(name: str, row: dict[str, Any]) -> str:
    lines = [f"{name}:", "| method | BLEU-4 | ROUGE-L | exact match |", "|---|---|---|---|"]
    for method, m in row.items():
        if isinstance(m, dict) and "bleu4" in m:
            lines.append(
                f"| {method} | {m['bleu4']:.3f} | {m['rougeL']:.3f} | {m['exact_match']:.3f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="caption,vqa")
    parser.add_argument("--epochs", type=int, default=None, help="override the configs'")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=Path("runs/generation_world.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {}
    for name in [n.strip() for n in args.only.split(",") if n.strip()]:
        overrides = [f"train.threads={args.threads}"]
        if args.epochs is not None:
            overrides.append(f"train.epochs={args.epochs}")
        start = time.perf_counter()
        prepared = prepare(load_config(str(CONFIGS[name]), overrides), progress=False)
        row = (caption if name == "caption" else vqa)(prepared)
        row["splits"] = {s: len(v) for s, v in prepared.splits.items()}
        row["evaluated_on"] = prepared.evaluation
        row["wall_seconds"] = round(time.perf_counter() - start, 1)
        results[name] = row
        print(table(name, row), flush=True)
        print(json.dumps(row, indent=2), flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
