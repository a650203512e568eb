"""`omnifuse tune`: search the fusion strategy, its size and depth, modality dropout and the
learning rate of a config."""

from __future__ import annotations

from pathlib import Path

import click

from omnifuse.cli.boundary import out_folder
from omnifuse.config import load_config


@click.command()
@click.argument("config")
@out_folder("Folder for the search: trials/NNNN run directories, the report, best.yaml.")
@click.option("--budget", default=None, help="Wall-clock time over every session: 90s, 30m, 2h.")
@click.option("--trials", type=click.IntRange(min=1), default=None, help="Trials to run at most.")
@click.option("--task", default=None, help="The classification task scored (default: first).")
@click.option(
    "--fusions", default="all", show_default=True, help="Comma-separated strategies, or all."
)
@click.option(
    "--fusion-parameters",
    default="20000:300000",
    show_default=True,
    metavar="MIN:MAX",
    help="Range of the fusion's parameter count (log scale); one number fixes it.",
)
@click.option(
    "--lr", default="0.0005:0.01", show_default=True, metavar="MIN:MAX", help="Learning rates."
)
@click.option(
    "--from-analysis",
    "analysis",
    type=click.Path(path_type=Path),
    default=None,
    help="An `omnifuse analyze` analysis.json: its recommended fusions are tried first.",
)
@click.option(
    "--pruner",
    type=click.Choice(["halving", "hyperband", "none"]),
    default="halving",
    show_default=True,
    help="How poor trials are stopped early.",
)
@click.option(
    "--min-epochs",
    type=click.IntRange(min=1),
    default=None,
    help="Epochs before a trial may be pruned (default: a quarter of train.epochs).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="The sampler's seed.")
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY.PATH=VALUE",
    help="Override a value of the base config, e.g. --set train.epochs=6.",
)
def tune(
    config: str,
    out: Path,
    budget: str | None,
    trials: int | None,
    task: str | None,
    fusions: str,
    fusion_parameters: str,
    lr: str,
    analysis: Path | None,
    pruner: str,
    min_epochs: int | None,
    seed: int,
    overrides: tuple[str, ...],
) -> None:
    """Search the fusion of CONFIG (a YAML/JSON file or preset:NAME) with Optuna (TPE, with
    successive-halving pruning): each trial is a run directory in OUT/trials; OUT gets the
    Pareto front of validation accuracy against parameters and latency (pareto.md,
    pareto.json, pareto.png) and best.yaml, a config for `omnifuse train`. Run it again with
    the same arguments to resume a search that was stopped; finished trials are kept.

    Example: omnifuse tune preset:world-demo --budget 30m --out tune-world --set train.epochs=6
    """
    from omnifuse.errors import ConfigError
    from omnifuse.tune.search import tune as run_search
    from omnifuse.tune.space import SearchSpace, parse_range, searchable_fusions
    from omnifuse.tune.study import parse_duration

    seconds = parse_duration(budget) if budget is not None else None
    if seconds is None and trials is None:
        raise ConfigError("tune: give --budget, --trials or both")
    names = [f.strip() for f in fusions.split(",") if f.strip()]
    space = SearchSpace(
        fusions=tuple(searchable_fusions() if names == ["all"] else names),
        fusion_parameters=parse_range(fusion_parameters, "--fusion-parameters", int),
        lr=parse_range(lr, "--lr", float),
    )
    summary = run_search(
        load_config(config, overrides),
        out,
        budget=seconds,
        trials=trials,
        task=task,
        space=space,
        analysis=analysis,
        pruner=pruner,
        min_epochs=min_epochs,
        seed=seed,
        echo=click.echo,
    )
    best = summary["best"]
    stopped = {"trials": "trials done", "budget": "budget spent"}[summary["stopped"]]
    click.echo(f"{stopped}: {summary['trials_done']} trials in {summary['seconds'] / 60:.1f} min")
    if best is not None:
        click.echo(
            f"best: trial {best['number']} ({best['fusion']}), validation accuracy "
            f"{best['value']:.4f}, {best['model_parameters']:,} parameters; "
            f"retrain it with: omnifuse train {out / 'best.yaml'} --out DIR"
        )
    click.echo(f"wrote {out}/pareto.md, pareto.json, pareto.png, trials.json and trials/")
