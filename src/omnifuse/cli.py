"""The `omnifuse` command: a thin layer over the library API.

Every error the project raises prints as one line on stderr with a non-zero exit code;
`--debug` shows the traceback instead.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import click
import yaml

from omnifuse.config import RunConfig, apply_overrides, parse_config, read_config_file
from omnifuse.errors import ConfigError, OmnifuseError

PRESET_PREFIX = "preset:"


def list_presets() -> list[str]:
    files = resources.files("omnifuse") / "presets"
    return sorted(p.name.removesuffix(".yaml") for p in files.iterdir() if p.name.endswith(".yaml"))


def resolve_config(source: str, overrides: Sequence[str] = ()) -> RunConfig:
    """A config file path, or `preset:NAME` for one shipped with the package, with
    `key.path=value` overrides applied before validation."""
    if source.startswith(PRESET_PREFIX):
        name = source.removeprefix(PRESET_PREFIX)
        if name not in list_presets():
            raise ConfigError(f"unknown preset '{name}'; known: {', '.join(list_presets())}")
        path = resources.files("omnifuse") / "presets" / f"{name}.yaml"
        data = yaml.safe_load(path.read_text())
    else:
        data = read_config_file(source)
    return parse_config(apply_overrides(data, overrides), source)


def print_metrics(metrics: dict[str, Any]) -> None:
    """A table: one row per task metric, one column for the model and each baseline."""
    columns = {"fused": metrics["tasks"]} | {
        f"only {m}": b["tasks"] for m, b in metrics.get("baselines", {}).items()
    }
    rows = [(t, k) for t, values in metrics["tasks"].items() for k in values]
    width = max(len(f"{t}/{k}") for t, k in rows) + 2
    click.echo("".join([f"{'metric':<{width}}", *(f"{c:>14}" for c in columns)]))
    for task, key in rows:
        cells = [
            f"{columns[c][task][key]:>14.4f}" if key in columns[c].get(task, {}) else f"{'-':>14}"
            for c in columns
        ]
        click.echo(f"{task + '/' + key:<{width}}" + "".join(cells))
    click.echo(
        f"trained in {metrics['train_seconds']:.1f} s on {metrics['splits']['train']} samples"
    )


class OmnifuseGroup(click.Group):
    """Turns the project's errors into one line and exit code 1, unless --debug is given."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OmnifuseError as error:
            if ctx.params.get("debug"):
                raise
            raise click.ClickException(str(error)) from None


@click.group(cls=OmnifuseGroup)
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """omnifuse: multimodal learning on any mix of inputs and tasks."""
    ctx.obj = {"debug": debug}


@cli.command()
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("omnifuse-demo"),
    show_default=True,
    help="Folder for metrics, plots and the trained model.",
)
@click.option("--n", type=int, default=3000, show_default=True, help="Samples in the world.")
@click.option("--epochs", type=int, default=None, help="Override the preset's epochs.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--no-baselines", is_flag=True, help="Skip the single-modality baselines.")
def demo(out: Path, n: int, epochs: int | None, seed: int, no_baselines: bool) -> None:
    """Generate the world (cached), train a fused model and single-modality baselines,
    evaluate on the held-out split and write metrics, plots and the model.

    Example: omnifuse demo --out omnifuse-demo
    """
    from omnifuse.train.run import run

    config = resolve_config(f"{PRESET_PREFIX}world-demo")
    data = config.model_dump(mode="json")
    data["data"]["dataset"].update(n=n, seed=seed)
    data["train"]["seed"] = seed
    if epochs is not None:
        data["train"]["epochs"] = epochs
    metrics = run(parse_config(data, "demo"), out, baselines=not no_baselines, checkpoints=False)
    print_metrics(metrics)
    click.echo(f"wrote {out}/metrics.json, plots and the model (config.json, model.safetensors)")


@cli.command()
@click.argument("config")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output folder.")
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY.PATH=VALUE",
    help="Override a config value (VALUE is read as YAML), e.g. --set train.epochs=3.",
)
@click.option("--resume", is_flag=True, help="Continue the run in --out from its checkpoint.")
@click.option(
    "--skip-bad", is_flag=True, help="Leave out unusable rows, listed in skipped_rows.jsonl."
)
@click.option("--baselines", is_flag=True, help="Also train one model per single modality.")
def train(
    config: str,
    out: Path,
    overrides: tuple[str, ...],
    resume: bool,
    skip_bad: bool,
    baselines: bool,
) -> None:
    """Train and evaluate CONFIG (a YAML/JSON file or preset:NAME), writing the resolved
    config, checkpoints, metrics, plots and the model to --out.

    Example: omnifuse train preset:world-tiny --out runs/tiny --set train.epochs=4
    """
    from omnifuse.train.run import run

    metrics = run(
        resolve_config(config, overrides),
        out,
        baselines=baselines,
        resume=resume,
        skip_bad=skip_bad,
    )
    print_metrics(metrics)


def load_model(directory: Path) -> Any:
    from omnifuse.model import OmnifuseModel

    return OmnifuseModel.from_pretrained(directory)


@cli.command("eval")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    default=None,
    help="A manifest to evaluate on (all its rows); default: the run's own data.",
)
@click.option(
    "--split",
    type=click.Choice(["train", "val", "test"]),
    default="test",
    show_default=True,
    help="Which split of the run's own data.",
)
def eval_command(directory: Path, data: Path | None, split: str) -> None:
    """Evaluate the model saved in DIRECTORY; prints a table on stderr and the metrics as
    JSON on stdout.

    Example: omnifuse eval runs/tiny --data new-data/manifest.csv
    """
    from omnifuse.inference import evaluate_saved

    metrics = evaluate_saved(load_model(directory), data, split=split)
    for task, values in metrics["tasks"].items():
        for key, value in values.items():
            click.echo(f"{task + '/' + key:<40}{value:>10.4f}", err=True)
    click.echo(json.dumps(metrics))


@cli.command()
@click.argument("directory", type=click.Path(path_type=Path))
@click.argument("inputs", nargs=-1, required=True)
def predict(directory: Path, inputs: tuple[str, ...]) -> None:
    """Predict every task of the model in DIRECTORY for INPUTS: one manifest, or files (each
    given to the model's modality of its kind). One JSON line per sample.

    Example: omnifuse predict runs/tiny scene1.png scene2.png
    """
    from omnifuse.inference import load_inputs, predict_rows

    model = load_model(directory)
    for row in predict_rows(model, load_inputs(model, inputs)):
        click.echo(json.dumps(row))


@cli.command()
@click.argument("directory", type=click.Path(path_type=Path))
@click.argument("inputs", nargs=-1, required=True)
@click.option("--task", default=None, help="The alignment task whose space to embed in.")
def embed(directory: Path, inputs: tuple[str, ...], task: str | None) -> None:
    """Embed INPUTS (one manifest, or files) in the shared space of an alignment task, for
    cross-modal search. One JSON line per sample: {"id": ..., modality: [numbers]}.

    Example: omnifuse embed runs/tiny captions.jsonl
    """
    from omnifuse.inference import embed_rows, load_inputs

    model = load_model(directory)
    for row in embed_rows(model, load_inputs(model, inputs), task=task):
        click.echo(json.dumps(row))


@cli.group()
def data() -> None:
    """Build datasets in the manifest format."""


@data.command("world")
@click.option("--out", type=click.Path(path_type=Path), required=True)
@click.option("--n", type=click.IntRange(min=1), default=3000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--missing",
    type=click.FloatRange(0, 0.9),
    default=0.05,
    show_default=True,
    help="Chance that each modality is absent from a sample.",
)
def data_world(out: Path, n: int, seed: int, missing: float) -> None:
    """Generate the synthetic multimodal world (PNG, WAV, Parquet manifest).

    Example: omnifuse data world --out world --n 3000 --seed 0
    """
    from omnifuse.data.world import generate_world

    manifest = generate_world(out, n=n, seed=seed, missing=missing, progress=True)
    click.echo(json.dumps({"manifest": str(manifest), "samples": n}))


@data.command("validate")
@click.argument("manifest", type=click.Path(path_type=Path))
@click.option(
    "--config",
    "config_source",
    default=None,
    help="Check each column as this run config reads it (file or preset:NAME).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead.")
def data_validate(manifest: Path, config_source: str | None, as_json: bool) -> None:
    """List every row of MANIFEST that cannot be used: missing or unreadable files,
    truncated audio, values that are not numbers, labels outside the class list. Exits with
    1 when any row is bad.

    Example: omnifuse data validate data/manifest.csv --config my-run.yaml
    """
    from omnifuse.data.validate import validate_manifest

    config = resolve_config(config_source) if config_source else None
    checked, bad = validate_manifest(manifest, config, progress=not as_json)
    if as_json:
        rows = [{"row": r.index + 1, "where": r.where, "problem": r.problem} for r in bad]
        click.echo(json.dumps({"rows": len(checked.rows), "bad": rows}))
    else:
        for row in bad:
            click.echo(str(row))
        summary = f"{len(bad)} of {len(checked.rows)} rows are bad" if bad else "no bad rows"
        click.echo(f"{manifest}: {summary}")
    if bad:
        raise SystemExit(1)


def main() -> None:
    cli()
