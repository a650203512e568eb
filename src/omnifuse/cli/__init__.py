"""The `omnifuse` command: a thin layer over the library API.

Every error the project raises prints as one line on stderr with a non-zero exit code;
`--debug` shows the traceback instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from omnifuse.cli.analyze import analyze
from omnifuse.cli.boundary import OmnifuseGroup, folder, out_folder
from omnifuse.cli.data import data
from omnifuse.cli.generate import generate
from omnifuse.cli.retrieval import index, search
from omnifuse.cli.serve import serve
from omnifuse.cli.tune import tune
from omnifuse.config import load_config
from omnifuse.errors import OmnifuseError

# metrics where lower is better; every other metric omnifuse reports is better higher
LOWER_IS_BETTER = ("mse", "mae")


def best_single(metrics: dict[str, Any], task: str, key: str) -> str:
    """The single-modality baseline that scores best on a task's metric ('-' without any)."""
    scores = {
        m: b["tasks"][task][key]
        for m, b in metrics.get("baselines", {}).items()
        if key in b["tasks"].get(task, {})
    }
    if not scores:
        return "-"
    sign = -1 if key in LOWER_IS_BETTER else 1
    return max(sorted(scores), key=lambda m: sign * scores[m])


def print_metrics(metrics: dict[str, Any]) -> None:
    """A table: one row per task metric, one column for the model and each baseline, and
    with baselines a last column naming the best single modality for that metric."""
    columns = {"fused": metrics["tasks"]} | {
        f"only {m}": b["tasks"] for m, b in metrics.get("baselines", {}).items()
    }
    rows = [(t, k) for t, values in metrics["tasks"].items() for k in values]
    width = max(len(f"{t}/{k}") for t, k in rows) + 2
    last = f"{'best single':>14}" if metrics.get("baselines") else ""
    click.echo("".join([f"{'metric':<{width}}", *(f"{c:>14}" for c in columns)]) + last)
    for task, key in rows:
        cells = [
            f"{columns[c][task][key]:>14.4f}" if key in columns[c].get(task, {}) else f"{'-':>14}"
            for c in columns
        ]
        best = f"{best_single(metrics, task, key):>14}" if last else ""
        click.echo(f"{task + '/' + key:<{width}}" + "".join(cells) + best)
    compute = metrics["compute"]
    click.echo(
        f"trained in {metrics['train_seconds']:.1f} s on {metrics['splits']['train']} samples "
        f"on {compute['device']} ({compute['processes']} x {compute['threads']} threads, "
        f"{compute['workers']} data workers each)"
    )


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
    callback=folder,
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

    overrides = [f"data.dataset.n={n}", f"data.dataset.seed={seed}", f"train.seed={seed}"]
    overrides += [f"train.epochs={epochs}"] if epochs is not None else []
    config = load_config("preset:world-demo", overrides)
    metrics = run(config, out, baselines=not no_baselines, checkpoints=False)
    print_metrics(metrics)
    click.echo(f"wrote {out}/metrics.json, plots and the model (config.json, model.safetensors)")


@cli.command()
@click.argument("config")
@out_folder()
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
@click.option(
    "--nproc",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Train with DDP on this many local processes (runs torchrun --nproc-per-node).",
)
def train(
    config: str,
    out: Path,
    overrides: tuple[str, ...],
    resume: bool,
    skip_bad: bool,
    baselines: bool,
    nproc: int,
) -> None:
    """Train and evaluate CONFIG (a YAML/JSON file or preset:NAME), writing the resolved
    config, checkpoints, metrics, plots and the model to --out. Under torchrun (or with
    --nproc N) every process trains its share of each batch with DDP; rank 0 writes.

    Example: omnifuse train preset:world-tiny --out runs/tiny --set train.epochs=4
    """
    from omnifuse.train.run import run

    loaded = load_config(config, overrides)  # a bad config stops here, before any process starts
    if nproc > 1:  # the same command, once per process, under torchrun
        command = ["train", config, "--out", str(out), *(f"--set={o}" for o in overrides)]
        flags = {"--resume": resume, "--skip-bad": skip_bad, "--baselines": baselines}
        command += [flag for flag, on in flags.items() if on]
        launch_processes(nproc, command)
        return
    metrics = run(loaded, out, baselines=baselines, resume=resume, skip_bad=skip_bad)
    if metrics:  # rank 0's; the other processes of a distributed run print nothing
        print_metrics(metrics)


def launch_processes(nproc: int, command: list[str]) -> None:
    """`torchrun --standalone --nproc-per-node N -m omnifuse COMMAND`, run by torch's own
    launcher in this process. A failed process has printed its one-line error; the launcher's
    report of it becomes one more line, not a traceback."""
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    arguments = ["--standalone", f"--nproc-per-node={nproc}", "-m", "omnifuse", *command]
    try:
        torchrun.run(torchrun.parse_args(arguments))
    except ChildFailedError as error:
        rank, failure = error.get_first_failure()
        raise OmnifuseError(
            f"training process {rank} of {nproc} failed (exit code {failure.exitcode}); "
            "its error is above"
        ) from None


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
@click.option(
    "--zero-shot",
    "zero_shot",
    metavar="COLUMN",
    default=None,
    help="Also classify COLUMN zero-shot: class names read as text through an alignment task.",
)
@click.option(
    "--prompt",
    default="{}",
    show_default=True,
    help="Template for each class name with --zero-shot, e.g. 'a photo of {}'.",
)
def eval_command(
    directory: Path, data: Path | None, split: str, zero_shot: str | None, prompt: str
) -> None:
    """Evaluate the model saved in DIRECTORY; prints a table on stderr and the metrics as
    JSON on stdout.

    Example: omnifuse eval runs/tiny --data new-data/manifest.csv --zero-shot scene_class
    """
    from omnifuse.inference import evaluate_saved

    metrics = evaluate_saved(
        load_model(directory), data, split=split, zero_shot=zero_shot, prompt=prompt
    )
    for task, values in metrics["tasks"].items():
        for key, value in values.items():
            click.echo(f"{task + '/' + key:<40}{value:>10.4f}", err=True)
    if zero_shot is not None:
        for modality, value in metrics["zero_shot"]["accuracy"].items():
            key = f"zero_shot/{zero_shot}/{modality}_accuracy"
            click.echo(f"{key:<40}{value:>10.4f}", err=True)
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


@cli.command()
@click.option(
    "--dataset",
    type=click.Choice(["world", "avmnist"]),
    default="world",
    show_default=True,
    help="world: preset world-demo scored on scene_class; avmnist: preset avmnist.",
)
@click.option(
    "--fusions",
    default="all",
    show_default=True,
    help="Comma-separated strategies, or all; late fusion and unimodal baselines always run.",
)
@click.option("--seeds", type=click.IntRange(min=1), default=3, show_default=True)
@click.option(
    "--budget",
    type=click.IntRange(min=1),
    default=150_000,
    show_default=True,
    help="Fusion parameters each strategy is sized to.",
)
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Override the epochs.")
@click.option("--task", default=None, help="The classification task to score (default: first).")
@click.option(
    "--throughput-steps",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Training steps timed per strategy for throughput and MFU.",
)
@out_folder()
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY.PATH=VALUE",
    help="Override a value of the base config, e.g. --set train.threads=2.",
)
def bench(
    dataset: str,
    fusions: str,
    seeds: int,
    budget: int,
    epochs: int | None,
    task: str | None,
    throughput_steps: int,
    out: Path,
    overrides: tuple[str, ...],
) -> None:
    """Every fusion strategy at a common parameter budget and the unimodal baselines, over
    seeds: accuracy, macro-F1, size, time, memory, throughput, MFU and MultiBench's
    robustness protocol. Writes results.json, results.md and accuracy-vs-noise plots.

    Example: omnifuse bench --dataset world --fusions all --seeds 3 --out bench-world
    """
    from omnifuse.bench import bench_config, run_bench

    extra = [f"train.epochs={epochs}"] if epochs is not None else []
    results = run_bench(
        bench_config(dataset, [*overrides, *extra]),
        out,
        fusions=fusions,
        seeds=seeds,
        budget=budget,
        task=task,
        dataset=dataset,
        throughput_steps=throughput_steps,
    )
    click.echo(f"{'fusion':<22}{'accuracy':>10}{'relative':>10}{'effective':>10}{'MFU':>8}")
    for label, entry in results["summary"].items():
        relative = (entry["relative_robustness_mean"] or {}).get("mean")
        effective = (entry["effective_robustness_mean"] or {}).get("mean")
        mfu = results["performance"][label]["mfu"]
        scores = "".join(
            f"{v:>10.4f}" if v is not None else f"{'-':>10}" for v in (relative, effective)
        )
        share = f"{100 * mfu:>7.2f}%" if mfu is not None else f"{'-':>8}"
        click.echo(f"{label:<22}{entry['accuracy']['mean']:>10.4f}{scores}{share}")
    if results["winner"] is not None:
        click.echo(f"winner: {results['winner']['label']}")
    click.echo(f"wrote {out}/results.json, results.md and plots")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of the table.")
def plugins(as_json: bool) -> None:
    """List the installed plugins (the `omnifuse.plugins` entry-point group) and every
    registered component: modality kinds, encoders, fusions, tasks and datasets, with the
    plugin that added each (or omnifuse for the built-ins).

    Example: omnifuse plugins --json
    """
    from omnifuse.registry import REGISTRIES, load_plugins

    installed = load_plugins()
    registered = {
        registry.kind: {name: registry.origin(name) for name in registry.names()}
        for registry in REGISTRIES
    }
    if as_json:
        click.echo(json.dumps({"plugins": installed, "registered": registered}))
        return
    click.echo(f"plugins: {len(installed)}")
    for name, where in installed.items():
        click.echo(f"  {name}: {where}")
    for kind, components in registered.items():
        click.echo(f"{kind}s:")
        for name, origin in components.items():
            click.echo(f"  {name}" + ("" if origin == "omnifuse" else f"  ({origin})"))


cli.add_command(analyze)
cli.add_command(data)
cli.add_command(generate)
cli.add_command(index)
cli.add_command(search)
cli.add_command(serve)
cli.add_command(tune)


def main() -> None:
    cli()
