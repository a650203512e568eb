"""`omnifuse analyze`: how the modalities interact about a classification label, and the
fusion family that calls for."""

from __future__ import annotations

import json
from pathlib import Path

import click

from omnifuse.cli.boundary import folder
from omnifuse.config import load_config
from omnifuse.errors import ConfigError


@click.command()
@click.argument("config", required=False)
@click.option(
    "--model",
    type=click.Path(path_type=Path),
    default=None,
    help="Analyse with the encoders of this saved model (on its own data) instead of training "
    "one model per modality on CONFIG.",
)
@click.option("--target", default=None, help="The classification task (or its column).")
@click.option(
    "--clusters",
    type=click.IntRange(min=2),
    default=12,
    show_default=True,
    help="k-means clusters per modality.",
)
@click.option(
    "--resamples",
    type=click.IntRange(min=0),
    default=100,
    show_default=True,
    help="Bootstrap resamples for the intervals and the late-fusion gap's test (0: none).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Clustering and bootstrap.")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Override the epochs.")
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY.PATH=VALUE",
    help="Override a config value, e.g. --set train.threads=1.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    callback=folder,
    default=Path("omnifuse-analysis"),
    show_default=True,
    help="Folder for analysis.json, analysis.md and analysis.png.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the JSON instead of the table.")
def analyze(
    config: str | None,
    model: Path | None,
    target: str | None,
    clusters: int,
    resamples: int,
    seed: int,
    epochs: int | None,
    overrides: tuple[str, ...],
    out: Path,
    as_json: bool,
) -> None:
    """Estimate, for a classification target and each pair of modalities, the partial
    information decomposition of the label (redundancy, what is unique to each, synergy)
    with bootstrap intervals, and recommend a family of fusion strategies. Embeddings come
    from one model per modality trained on CONFIG's tasks, or from the encoders of --model.

    Example: omnifuse analyze preset:world-demo --target synergy --out analysis-world
    """
    from omnifuse.analysis.analyze import Settings
    from omnifuse.analysis.analyze import analyze as run_analysis
    from omnifuse.analysis.report import table, write_analysis

    if (config is None) == (model is None):
        raise ConfigError("analyze: give CONFIG or --model DIR (one of them)")
    if model is not None and (overrides or epochs is not None):
        raise ConfigError("analyze --model: --set and --epochs apply to a CONFIG to train on")
    loaded = None
    if config is not None:
        extra = [f"train.epochs={epochs}"] if epochs is not None else []
        loaded = load_config(config, [*overrides, *extra])
    settings = Settings(clusters=clusters, resamples=resamples, seed=seed)
    result = run_analysis(loaded, model=model, target=target, settings=settings).as_dict()
    paths = write_analysis(result, out)
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(table(result), nl=False)
    click.echo(f"\nwrote {paths['json']}, {paths['table'].name} and {paths['plot'].name}")
