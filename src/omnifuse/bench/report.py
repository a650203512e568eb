"""The benchmark's files: `results.json` (everything), `results.md` (tables, the winner, the
definitions) and one accuracy-vs-noise plot per (modality, perturbation)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"

DEFINITIONS = """\
## Definitions

- **Accuracy, macro-F1**: of the task on the {split} split, clean inputs; mean ± sample
  standard deviation over the seeds (the seed sets the initial weights and the batch order;
  the data and its split are the same for every seed).
- **Fusion parameters**: the fusion module's own, sized with `budget: {budget}` (the width
  whose parameter count is closest); a strategy that cannot come near the budget keeps the
  count it has at its smallest width. **Model parameters**: encoders, fusion, decoder and
  heads (a unimodal baseline still builds every encoder; only its modality reaches the output).
- **Training seconds**: the whole training loop (collating, steps, per-epoch validation).
  **Training samples/s**: samples stepped on / training seconds. **Inference samples/s**:
  the evaluation split collated and predicted in batches of 256, no gradient.
- **Peak RSS**: the process's resident-memory high-water mark during training (Linux VmHWM,
  reset before each run through /proc/self/clear_refs), absolute; **added** is that peak minus
  the RSS when training started. Process-wide CPU memory: the prepared data is in the
  absolute figure, and memory freed by earlier runs and kept by the allocator hides part of
  the added one.
- **Step FLOPs**: the matrix multiplications, convolutions and attention of one training
  forward + backward, counted by `torch.utils.flop_counter.FlopCounterMode` (elementwise work
  not counted). **Step samples/s**: steady state over pre-collated batches (forward,
  backward, clipping, AdamW step; {steps} steps after 2 of warm-up), a fresh model.
  **MFU** = step FLOPs × steps/s ÷ the measured matmul peak.
- **Matmul peak**: the best of {repeats} timings of a {size} × {size} float32 `torch.mm` on
  {threads} threads: {peak:.1f} GFLOP/s (2·n³ / seconds).
- **Robustness protocol** (MultiBench, Liang et al. 2021): at test time one modality at a
  time is perturbed, at levels 0.1 to 1.0 (level 0 is the clean accuracy), on the
  preprocessed tensors, with the same random draws for every strategy of a seed:
  image `gaussian` (additive noise, std = level × the sample's own std) and `occlusion`
  (a random rectangle of area fraction level, set to 0 = the normalised mean); audio
  `noise` (the same additive noise) and `dropout` (each time frame zeroed with probability
  level); every modality `missing` (absent in a random fraction level of the samples; at
  1.0 in all of them, except a sample in which it is the only modality present).
- **Relative robustness** of a curve f: R(f) = ∫₀¹ f(l) dl by the trapezoid rule over the 11
  points (MultiBench's `relative_robustness_helper`).
- **Effective robustness** against late fusion (r, the same seed): E(f) = ∫₀¹ f(l) − [r(l) +
  f(0) − r(0)] dl = R(f) − R(r) − (f(0) − r(0)): the accuracy kept under noise beyond what
  late fusion's curve, shifted to the same clean accuracy, predicts (MultiBench's
  `effective_robustness_helper`, β_f = lf + f[0] − lf[0], after Taori et al. 2020;
  MultiBench sums the gaps over the 11 points and min-max normalises across methods, here
  the gap is integrated like R and left unnormalised). 0 for late fusion; > 0 degrades more
  gently than late fusion.
"""


def _fmt(stats: dict[str, Any] | None, digits: int = 3, scale: float = 1.0) -> str:
    if stats is None or stats.get("mean") is None:
        return "-"
    mean = stats["mean"] * scale
    text = f"{mean:,.{digits}f}"
    if stats.get("std") is not None:
        text += f" ± {stats['std'] * scale:,.{digits}f}"
    return text


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
    ]


def _curves(summary: dict[str, Any]) -> list[tuple[str, str]]:
    first = next(iter(summary.values()))["robustness"]
    return [(m, p) for m, c in first.items() for p in c]


def plot_robustness(results: dict[str, Any], out: Path) -> list[str]:
    """One PNG per (modality, perturbation): mean accuracy against level, one line per
    strategy, shaded ± one standard deviation over seeds."""
    summary = results["summary"]
    levels = results["settings"]["levels"]
    files = []
    for modality, perturbation in _curves(summary):
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for label, entry in summary.items():
            curve = entry["robustness"][modality][perturbation]
            style = "--" if entry["fusion"]["type"] == "unimodal" else "-"
            (line,) = ax.plot(levels, curve["mean"], style, marker="o", ms=3, lw=1.4, label=label)
            if all(s is not None for s in curve["std"]):
                low = [m - s for m, s in zip(curve["mean"], curve["std"], strict=True)]
                high = [m + s for m, s in zip(curve["mean"], curve["std"], strict=True)]
                ax.fill_between(levels, low, high, color=line.get_color(), alpha=0.15)
        ax.set(
            xlabel=f"{perturbation} level",
            ylabel=results["settings"]["metric"],
            title=f"{modality}: {perturbation}",
            xlim=(0, 1),
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        name = f"robustness_{modality}_{perturbation}.png"
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        files.append(name)
    return files


def markdown(results: dict[str, Any], figures: list[str]) -> str:
    """results.md: the settings, the winner, one table per section, the plots, the
    definitions."""
    settings, summary = results["settings"], results["summary"]
    curves = _curves(summary)
    lines = _preamble(settings)
    win = results.get("winner")
    if win is not None:
        lines += _winner_lines(win)
    lines += _quality_section(summary)
    lines += _cost_section(summary, settings["budget"])
    lines += _throughput_section(results["performance"], results["matmul_peak"])
    lines += _robustness_sections(summary, curves)
    lines += _missing_section(summary)
    lines += ["## Plots", "", *(f"![{f}]({f})" for f in figures), ""]
    lines += [_definitions(results)]
    return "\n".join(lines)


def _preamble(settings: dict[str, Any]) -> list[str]:
    """The title and one paragraph of what was run: task, splits, budget, seeds, versions."""
    splits = " / ".join(f"{n} {name}" for name, n in settings["splits"].items())
    seeds = ", ".join(str(s) for s in settings["seeds"])
    return [
        f"# omnifuse bench: {settings['dataset']}",
        "",
        f"Task `{settings['task']}` ({settings['metric']}), evaluated on the "
        f"{settings['evaluated_on']} split; samples {splits}. Fusion budget "
        f"{settings['budget']:,} parameters, {settings['epochs']} epochs, batch "
        f"{settings['batch_size']}, seeds {seeds}, {settings['threads']} threads, torch "
        f"{settings['torch']}. Whole run: {settings['seconds']} s.",
        "",
    ]


def _winner_lines(win: dict[str, Any]) -> list[str]:
    """The winner's paragraph: its accuracy and its margins over late fusion and the
    unimodal baselines (late fusion's margin over itself is left out)."""
    best = win["label"]
    parts = [f"**Winner: {best}**, accuracy {_fmt(win['accuracy'])}"]
    if win["over_late"] is not None and best != "late":
        parts.append(f"{win['over_late']:+.3f} over late fusion")
    if win["best_unimodal"] is not None:
        margin = win["over_unimodal"][win["best_unimodal"]]
        parts.append(f"{margin:+.3f} over the best unimodal baseline ({win['best_unimodal']})")
    others = ", ".join(f"{k} {v:+.3f}" for k, v in win["over_unimodal"].items())
    return ["; ".join(parts) + f". Over each unimodal baseline: {others}.", ""]


def _quality_section(summary: dict[str, Any]) -> list[str]:
    """The clean accuracy and macro-F1 of each line."""
    return [
        "## Accuracy",
        "",
        *_table(
            ["fusion", "accuracy", "macro-F1"],
            [[k, _fmt(v["accuracy"]), _fmt(v["macro_f1"])] for k, v in summary.items()],
        ),
    ]


def _cost_section(summary: dict[str, Any], budget: int) -> list[str]:
    """Parameters, time and memory of each line, and the lines whose fusion could not come
    within 10% of the budget (so a reader does not compare them as equals)."""
    lines = ["## Size and cost", ""]
    lines += _table(
        [
            "fusion",
            "width",
            "fusion parameters",
            "model parameters",
            "training s",
            "training samples/s",
            "inference samples/s",
            "peak RSS MiB",
            "added MiB",
        ],
        [
            [
                k,
                str(v["width"]),
                _fmt(v["fusion_parameters"], 0),
                _fmt(v["model_parameters"], 0),
                _fmt(v["train_seconds"], 1),
                _fmt(v["train_samples_per_s"], 0),
                _fmt(v["inference_samples_per_s"], 0),
                _fmt(v["peak_rss_mib"], 0),
                _fmt(v["peak_rss_added_mib"], 0),
            ]
            for k, v in summary.items()
        ],
    )
    off = [
        f"{k} ({v['fusion_parameters']['mean']:,.0f})"
        for k, v in summary.items()
        if abs(v["fusion_parameters"]["mean"] - budget) > 0.1 * budget
    ]
    if off:
        lines += [
            "More than 10% away from the budget (fusion parameters at the closest width): "
            + ", ".join(off)
            + ".",
            "",
        ]
    return lines


def _throughput_section(performance: dict[str, Any], peak: dict[str, Any]) -> list[str]:
    """Step FLOPs, steady-state throughput and MFU of each line, and the peak they are
    measured against."""
    lines = ["## Training throughput and model FLOPs utilisation", ""]
    lines += _table(
        ["fusion", "step MFLOP", "step samples/s", "achieved GFLOP/s", "MFU"],
        [
            [
                k,
                f"{p['flops'] / 1e6:,.1f}",
                f"{p['samples_per_s']:,.0f}",
                f"{p['achieved_flops_per_s'] / 1e9:,.2f}",
                "-" if p["mfu"] is None else f"{100 * p['mfu']:.2f}%",
            ]
            for k, p in performance.items()
        ],
    )
    return [*lines, f"Matmul peak: {peak['flops_per_s'] / 1e9:.1f} GFLOP/s.", ""]


def _robustness_sections(summary: dict[str, Any], curves: list[tuple[str, str]]) -> list[str]:
    """One table per robustness score: each curve's score and their mean; a line without
    the score (no late fusion of its seed to compare with) is all dashes."""
    lines: list[str] = []
    for score, title in (
        ("relative_robustness", "Relative robustness (area under accuracy vs level)"),
        ("effective_robustness", "Effective robustness (against late fusion)"),
    ):
        lines += [f"## {title}", ""]
        rows = []
        for k, v in summary.items():
            if v[score] is None:
                rows.append([k, *(["-"] * (len(curves) + 1))])
                continue
            rows.append([k, *(_fmt(v[score][m][p]) for m, p in curves), _fmt(v[f"{score}_mean"])])
        lines += _table(["fusion", *(f"{m} {p}" for m, p in curves), "mean"], rows)
    return lines


def _missing_section(summary: dict[str, Any]) -> list[str]:
    """Accuracy with each modality absent from 0%, 50% and 100% of the test samples, for every
    line, and beneath them, for each modality, the best unimodal baseline of the other
    modalities (what the fused model should keep without it); nothing when no curve is a
    `missing` one."""
    first = next(iter(summary.values()))["missing"]
    if not first:
        return []
    columns = [(m, share) for m, shares in first.items() for share in shares]
    rows = [
        [k, *(_fmt(v["missing"][m][share]) for m, share in columns)] for k, v in summary.items()
    ]
    rest = _best_of_the_rest(summary)
    rows.append(["best other modality alone", *(_fmt(rest.get(m)) for m, _ in columns)])
    return [
        "## Missing modalities (accuracy with the modality absent from a share of test samples)",
        "",
        *_table(["fusion", *(f"without {m} {share}%" for m, share in columns)], rows),
        "The last row is the best unimodal baseline among the other modalities, trained on the "
        "same data: with a modality absent from every sample, a fused model that degrades "
        "gracefully keeps at least that. At 100% a sample in which the modality is the only "
        "one present keeps it.",
        "",
    ]


def _best_of_the_rest(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """modality -> the clean accuracy statistics of the best unimodal baseline that does not
    read it (none when only that modality's baseline ran)."""
    alone = {
        v["fusion"].get("modality"): v["accuracy"]
        for v in summary.values()
        if v["fusion"]["type"] == "unimodal" and v["accuracy"]["mean"] is not None
    }
    best = {}
    for m in next(iter(summary.values()))["missing"]:
        others = [a for name, a in alone.items() if name != m]
        if others:
            best[m] = max(others, key=lambda a: a["mean"])
    return best


def plot_missing(results: dict[str, Any], out: Path) -> str | None:
    """missing_modalities.png: one panel per modality, accuracy against the share of test
    samples it is absent from, one line per strategy (dashed: unimodal baselines), and a
    dotted horizontal line at the best unimodal baseline of the other modalities."""
    summary = results["summary"]
    modalities = list(next(iter(summary.values()))["missing"])
    if not modalities:
        return None
    rest = _best_of_the_rest(summary)
    fig, grid = plt.subplots(
        1, len(modalities), figsize=(4.2 * len(modalities), 4.0), squeeze=False
    )
    panels = list(grid[0])
    for ax, modality in zip(panels, modalities, strict=True):
        for label, entry in summary.items():
            points = entry["missing"][modality]
            shares = [int(share) for share in points]
            means = [p["mean"] for p in points.values()]
            style = "--" if entry["fusion"]["type"] == "unimodal" else "-"
            ax.plot(shares, means, style, marker="o", ms=4, lw=1.4, label=label)
        if modality in rest:
            ax.axhline(
                rest[modality]["mean"], color="black", ls=":", lw=1.2, label="best other alone"
            )
        ax.set(
            xlabel=f"test samples without {modality} (%)",
            ylabel=results["settings"]["metric"],
            title=f"without {modality}",
            xticks=shares,
        )
        ax.grid(alpha=0.3)
    panels[-1].legend(fontsize=7)
    fig.tight_layout()
    name = "missing_modalities.png"
    fig.savefig(out / name, dpi=100)
    plt.close(fig)
    return name


def _definitions(results: dict[str, Any]) -> str:
    """DEFINITIONS filled in with this run's split, budget and measurement settings."""
    settings, peak = results["settings"], results["matmul_peak"]
    return DEFINITIONS.format(
        split=settings["evaluated_on"],
        budget=f"{settings['budget']:,}",
        steps=next(iter(results["performance"].values()))["steps"],
        repeats=peak["repeats"],
        size=peak["size"],
        threads=peak["threads"],
        peak=peak["flops_per_s"] / 1e9,
    )


def _clean(value: Any) -> Any:
    """NaN as null: JSON has no NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def write_results(results: dict[str, Any], out: Path) -> list[str]:
    """Write results.json, the plots and results.md into `out`; returns the file names."""
    out.mkdir(parents=True, exist_ok=True)
    (out / RESULTS_JSON).write_text(json.dumps(_clean(results), indent=2) + "\n")
    figures = plot_robustness(results, out)
    missing = plot_missing(results, out)
    figures = figures if missing is None else [missing, *figures]
    (out / RESULTS_MD).write_text(markdown(results, figures))
    return [RESULTS_JSON, RESULTS_MD, *figures]
