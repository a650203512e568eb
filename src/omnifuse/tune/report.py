"""What a search writes after every trial: every trial (trials.json), the Pareto front of
validation accuracy against parameters and inference latency (pareto.json, pareto.md,
pareto.png) and the best trial's config as a file `omnifuse train` takes (best.yaml).

    summary = write_report(out, records, base=config, task="scene", state={...})
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import yaml

from omnifuse.config import RunConfig, apply_overrides, parse_config
from omnifuse.tune.pareto import OBJECTIVES, pareto_front

BEST_FILE = "best.yaml"


def best_record(records: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The completed trial with the best validation value; ties go to fewer parameters, then
    lower latency, then the earlier trial."""
    complete = [r for r in records if r["state"] == "complete"]
    if not complete:
        return None
    return min(
        complete,
        key=lambda r: (-r["value"], r["model_parameters"], r["latency_ms"], r["number"]),
    )


def best_config(base: RunConfig, record: Mapping[str, Any]) -> RunConfig:
    """The base config as it was given (what was set, no fitted statistics) with the trial's
    choices: `omnifuse train` refits and retrains it from the data."""
    data = apply_overrides(base.model_dump(mode="json", exclude_unset=True), record["overrides"])
    return parse_config(data, f"tune trial {record['number']}")


def write_best(path: Path, base: RunConfig, record: Mapping[str, Any], task: str) -> Path:
    """best.yaml: the best trial's config with a comment saying what it scored."""
    config = best_config(base, record)
    evaluation = record["evaluation"].get("accuracy")
    scored = f", {record['evaluated_on']} {evaluation:.4f}" if evaluation is not None else ""
    header = [
        f"# omnifuse tune: trial {record['number']} ({record['dir']}), the best of the search",
        f"# validation {task} accuracy {record['value']:.4f}{scored}; "
        f"{record['model_parameters']:,} parameters ({record['fusion_parameters']:,} in the "
        f"fusion), {record['latency_ms']:.2f} ms per sample",
        f"# retrain it: omnifuse train {path.name} --out DIR",
    ]
    body = yaml.safe_dump(config.model_dump(mode="json", exclude_unset=True), sort_keys=False)
    path.write_text("\n".join(header) + "\n" + body)
    return path


def options(record: Mapping[str, Any]) -> str:
    """A trial's choices besides the fusion, short: `budget 61,234, depth 2, lr 0.0031` (the
    budget: the fusion parameters asked for; the closest width is built)."""
    params = record["params"]
    prefix = f"{params['fusion']}."
    names = {"fusion_parameters": "budget", "modality_dropout": "dropout"}
    parts = [
        f"{names.get(k, k.removeprefix(prefix))} {_short(v)}"
        for k, v in params.items()
        if k != "fusion"
    ]
    return ", ".join(parts)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _row(record: Mapping[str, Any]) -> str:
    evaluation = record["evaluation"].get("accuracy")
    cells = [
        str(record["number"]),
        record["state"],
        record["fusion"],
        options(record),
        f"{record['value']:.4f}",
        f"{evaluation:.4f}" if evaluation is not None else "-",
        f"{record['fusion_parameters']:,}",
        f"{record['model_parameters']:,}",
        f"{record['latency_ms']:.2f}",
        f"{record['epochs_trained']}/{record['epochs']}",
    ]
    return "| " + " | ".join(cells) + " |"


def markdown(
    records: Sequence[Mapping[str, Any]],
    front: Sequence[int],
    best: Mapping[str, Any] | None,
    *,
    task: str,
    state: Mapping[str, Any],
) -> str:
    """pareto.md: the state of the search, the front and every trial, as tables."""
    evaluated = records[0]["evaluated_on"] if records else "test"
    head = (
        f"| trial | state | fusion | choices | val {task} acc | {evaluated} acc "
        "| fusion params | model params | latency ms | epochs |"
    )
    rule = "|---" * 10 + "|"
    failed = state.get("failed", [])
    lines = [
        "# omnifuse tune",
        "",
        f"{len(records) + len(failed)} trials done ({len(records)} trained, {len(failed)} "
        f"failed) in {state['seconds'] / 60:.1f} min; trials are scored on validation "
        f"{task} accuracy, and the {evaluated} column is for information only.",
        "",
    ]
    if best is not None:
        lines += [
            f"Best: trial {best['number']} ({best['fusion']}, {options(best)}), "
            f"validation accuracy {best['value']:.4f}; its config is `{BEST_FILE}`.",
            "",
        ]
    lines += [
        "## Pareto front: validation accuracy, model parameters, latency",
        "",
        "Completed trials no other completed trial beats on all three at once.",
        "",
        head,
        rule,
        *(_row(records[i]) for i in front),
        "",
        "## Every trial",
        "",
        "A pruned trial's values are those of the epoch it was stopped at.",
        "",
        head,
        rule,
        *(_row(r) for r in records),
    ]
    if failed:
        lines += ["", "## Failed", ""] + [f"- trial {f['number']}: {f['error']}" for f in failed]
    return "\n".join(lines) + "\n"


def plot(
    records: Sequence[Mapping[str, Any]], front: Sequence[int], path: Path, *, task: str
) -> None:
    """Validation accuracy against model parameters and against latency: every trial, the
    front's labelled with their number and fusion."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    on_front = set(front)
    for ax, key, label in (
        (axes[0], "model_parameters", "model parameters"),
        (axes[1], "latency_ms", "latency per sample (ms)"),
    ):
        for state, marker in (("complete", "o"), ("pruned", "x")):
            chosen = [r for i, r in enumerate(records) if r["state"] == state and i not in on_front]
            ax.scatter(
                [r[key] for r in chosen],
                [r["value"] for r in chosen],
                marker=marker,
                c="0.6",
                label=state,
            )
        ax.scatter(
            [records[i][key] for i in front],
            [records[i]["value"] for i in front],
            c="tab:red",
            label="Pareto front",
        )
        for i in front:
            r = records[i]
            ax.annotate(f"{r['number']} {r['fusion']}", (r[key], r["value"]), fontsize=7)
        ax.set(xlabel=label, xscale="log")
    axes[0].set(ylabel=f"validation {task} accuracy")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(
    out: Path,
    records: Sequence[Mapping[str, Any]],
    *,
    base: RunConfig,
    task: str,
    state: dict[str, Any],
) -> dict[str, Any]:
    """Every report file of a search in `out`, from its trained trials' `records` (in trial
    order) and `state` (seconds spent, failed trials, the recommendation it started from);
    returns what pareto.json holds."""
    complete = [r for r in records if r["state"] == "complete"]
    front = [records.index(complete[i]) for i in pareto_front(complete, OBJECTIVES)]
    best = best_record(records)
    summary = {
        "task": task,
        "metric": f"validation {task}/accuracy",
        "objectives": OBJECTIVES,
        "front": [records[i] for i in front],
        "best": best,
        "best_config": BEST_FILE if best is not None else None,
        **state,
    }
    (out / "trials.json").write_text(json.dumps(list(records), indent=2) + "\n")
    (out / "pareto.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "pareto.md").write_text(markdown(records, front, best, task=task, state=state))
    if records:
        plot(records, front, out / "pareto.png", task=task)
    if best is not None:
        write_best(out / BEST_FILE, base, best, task)
    return summary
