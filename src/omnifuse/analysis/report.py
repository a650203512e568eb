"""What `omnifuse analyze` writes: the profile as a Markdown table (analysis.md), as JSON
(analysis.json) and as a plot (analysis.png: per pair, the four parts as bars with their
bootstrap intervals as whiskers, and the label's entropy as a line).

    paths = write_analysis(analysis.as_dict(), Path("out"))
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

JSON_FILE, TABLE_FILE, PLOT_FILE = "analysis.json", "analysis.md", "analysis.png"
COLOURS = {
    "redundancy": "#4c72b0",
    "unique1": "#55a868",
    "unique2": "#8fd18f",
    "synergy": "#c44e52",
}


def _cell(entry: dict[str, float], resamples: int) -> str:
    if resamples == 0:
        return f"{entry['value']:.3f}"
    return f"{entry['value']:.3f} [{entry['low']:.3f}, {entry['high']:.3f}]"


def _gap(entry: dict[str, float]) -> str:
    p = entry["p_value"]
    tested = "" if p != p else (" (p < 0.01)" if p < 0.01 else f" (p = {p:.2f})")
    return f"{entry['value']:.3f}{tested}"


def _clusters(settings: dict[str, Any]) -> str:
    used, asked = settings["clusters_used"], settings["clusters"]
    return str(used) if used == asked else f"{used} (of {asked} asked: a row per cell)"


def table(result: dict[str, Any]) -> str:
    """The profile as Markdown: a heading, the settings, one row per pair, the paragraph."""
    target, settings = result["target"], result["settings"]
    resamples = settings["resamples"]
    level = f"{settings['level']:.0%}"
    lines = [
        f"# Interactions of the modalities about `{target['task']}`",
        "",
        f"Label `{target['column']}`, {len(target['classes'])} classes, entropy "
        f"{target['entropy']:.3f} bits on the {settings['labelled_rows']} labelled held-out "
        f"rows. Each modality's embedding in {_clusters(settings)} k-means clusters; bits, "
        f"bias-corrected, with {level} basic bootstrap intervals over {resamples} resamples. "
        "Late-fusion gap: the information no sum of per-modality evidence recovers, net of "
        "what sampling noise gives (its p-value from the same number of null draws).",
        "",
        "| pair (1st + 2nd) | rows | I(Y; both) | redundancy | unique to 1st | unique to 2nd "
        "| synergy | late-fusion gap |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for pair in result["pairs"]:
        first, second = pair["modalities"]
        cells = [
            _cell(pair["total"], resamples),
            _cell(pair["redundancy"], resamples),
            _cell(pair["unique"][first], resamples),
            _cell(pair["unique"][second], resamples),
            _cell(pair["synergy"], resamples),
            _gap(pair["late_fusion_gap"]),
        ]
        lines.append(f"| {first} + {second} | {pair['samples']} | " + " | ".join(cells) + " |")
    recommendation = result["recommendation"]
    lines += [
        "",
        f"**Recommendation: {recommendation['family']}** "
        f"({', '.join(recommendation['fusions'])}). {recommendation['why']}",
    ]
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    """Grouped bars per pair (redundancy, unique to each, synergy) with interval whiskers,
    and the label's entropy as a dashed line: the parts of a pair sum to at most it."""
    pairs = result["pairs"]
    names = ("redundancy", "unique1", "unique2", "synergy")
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(pairs) + 2), 4.0))
    width = 0.2
    x = np.arange(len(pairs))
    for i, name in enumerate(names):
        entries = []
        for pair in pairs:
            first, second = pair["modalities"]
            entries.append(
                pair["unique"][first if name == "unique1" else second]
                if name.startswith("unique")
                else pair[name]
            )
        values = np.array([e["value"] for e in entries])
        errors = np.array(
            [[e["value"] - e["low"] for e in entries], [e["high"] - e["value"] for e in entries]]
        ).clip(0)
        label = {"unique1": "unique to 1st", "unique2": "unique to 2nd"}.get(name, name)
        ax.bar(x + (i - 1.5) * width, values, width, yerr=errors, capsize=2, label=label,
               color=COLOURS[name])  # fmt: skip
    ax.axhline(result["target"]["entropy"], color="grey", ls="--", lw=1, label="H(label)")
    ax.set_xticks(x, [" + ".join(p["modalities"]) for p in pairs], rotation=15)
    ax.set(ylabel="bits", title=f"interactions about {result['target']['task']} "
           f"(recommended: {result['recommendation']['family']})")  # fmt: skip
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_analysis(result: dict[str, Any], out: Path) -> dict[str, Path]:
    """analysis.json, analysis.md and analysis.png in `out` (created); their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / JSON_FILE, "table": out / TABLE_FILE, "plot": out / PLOT_FILE}
    paths["json"].write_text(json.dumps(result, indent=2) + "\n")
    paths["table"].write_text(table(result))
    plot(result, paths["plot"])
    return paths
