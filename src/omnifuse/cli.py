"""The `omnifuse` command: a thin layer over the library API.

Every error the project raises prints as one line on stderr with a non-zero exit code;
`--debug` shows the traceback instead.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import click

from omnifuse.config import RunConfig, load_config, parse_config
from omnifuse.errors import ConfigError, OmnifuseError

PRESET_PREFIX = "preset:"


def list_presets() -> list[str]:
    files = resources.files("omnifuse") / "presets"
    return sorted(p.name.removesuffix(".yaml") for p in files.iterdir() if p.name.endswith(".yaml"))


def resolve_config(source: str) -> RunConfig:
    """A config file path, or `preset:NAME` for one shipped with the package."""
    if not source.startswith(PRESET_PREFIX):
        return load_config(source)
    name = source.removeprefix(PRESET_PREFIX)
    if name not in list_presets():
        raise ConfigError(f"unknown preset '{name}'; known: {', '.join(list_presets())}")
    import yaml

    text = (resources.files("omnifuse") / "presets" / f"{name}.yaml").read_text()
    return parse_config(yaml.safe_load(text), source)


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
    metrics = run(parse_config(data, "demo"), out, baselines=not no_baselines)
    print_metrics(metrics)
    click.echo(f"wrote {out}/metrics.json, plots and the model (config.json, model.safetensors)")


@cli.command()
@click.argument("config")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output folder.")
@click.option("--baselines", is_flag=True, help="Also train one model per single modality.")
def train(config: str, out: Path, baselines: bool) -> None:
    """Train and evaluate CONFIG (a YAML/JSON file or preset:NAME).

    Example: omnifuse train preset:world-demo --out runs/world
    """
    from omnifuse.train.run import run

    metrics = run(resolve_config(config), out, baselines=baselines)
    print_metrics(metrics)


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


def main() -> None:
    cli()
