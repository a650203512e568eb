"""The `omnifuse` command: a thin layer over the library API.

Every error the project raises prints as one line on stderr with a non-zero exit code;
`--debug` shows the traceback instead.
"""

from __future__ import annotations

import json
import traceback
from pathlib import Path
from typing import Any

import click

from omnifuse.config import load_config
from omnifuse.errors import OmnifuseError


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
    """The error boundary of every command: whatever escapes the library prints as one line
    and exit code 1, unless --debug is given (then the traceback). The project's errors say
    what and where; anything else (a bug) is named with the line of omnifuse it came from."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise  # click's own usage errors and exits
        except Exception as error:
            if ctx.params.get("debug"):
                raise
            if isinstance(error, OmnifuseError):
                raise click.ClickException(str(error)) from None
            raise click.ClickException(unexpected(error)) from None


def unexpected(error: Exception) -> str:
    """One line for an error the library did not expect: its type, message and the last
    omnifuse line it passed through."""
    package = Path(__file__).resolve().parent
    frames = [
        (path, frame.lineno)
        for frame in traceback.extract_tb(error.__traceback__)
        if (path := Path(frame.filename).resolve()).is_relative_to(package)
    ]
    where = ""
    if frames:
        path, line = frames[-1]
        where = f" at omnifuse/{path.relative_to(package).as_posix()}:{line}"
    message = str(error).splitlines()[0] if str(error) else ""
    return (
        f"unexpected {type(error).__name__}{where}: {message} "
        "(an omnifuse bug: rerun with --debug for the traceback, and report it)"
    )


def folder(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """An --out folder, refused before any work when a file has its name."""
    if value is not None and value.exists() and not value.is_dir():
        raise OmnifuseError(f"--out {value}: a file, not a folder; choose another --out")
    return value


def not_folder(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """An --out file, refused before any work when a folder has its name."""
    if value is not None and value.is_dir():
        raise OmnifuseError(f"--out {value}: a folder, not a file; name the file to write")
    return value


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
@click.option(
    "--out", type=click.Path(path_type=Path), callback=folder, required=True, help="Output folder."
)
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
@click.option(
    "--out", type=click.Path(path_type=Path), callback=folder, required=True, help="Output folder."
)
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


@cli.group()
def data() -> None:
    """Build datasets in the manifest format."""


@data.command("world")
@click.option("--out", type=click.Path(path_type=Path), callback=folder, required=True)
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


@data.command("avmnist")
@click.option("--out", type=click.Path(path_type=Path), callback=folder, required=True)
@click.option(
    "--mnist",
    type=click.Path(path_type=Path),
    required=True,
    help="Folder of the four MNIST IDX files (.gz or raw).",
)
@click.option(
    "--fsdd",
    type=click.Path(path_type=Path),
    required=True,
    help="Folder of the FSDD recordings ({digit}_{speaker}_{take}.wav).",
)
@click.option(
    "--download", is_flag=True, help="First fetch missing sources into --mnist and --fsdd."
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--snr-db", type=float, default=-10.0, show_default=True, help="Signal-to-noise ratio."
)
@click.option(
    "--energy-removed",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.75,
    show_default=True,
    help="Share of the image variance removed by PCA.",
)
@click.option(
    "--train-size",
    type=click.IntRange(min=1),
    default=None,
    help="MNIST train images used (val included).",
)
@click.option(
    "--val-size",
    type=click.IntRange(min=0),
    default=None,
    help="Of them, the last for val (default 1/12).",
)
@click.option(
    "--test-size", type=click.IntRange(min=1), default=None, help="MNIST test images used."
)
def data_avmnist(
    out: Path,
    mnist: Path,
    fsdd: Path,
    download: bool,
    seed: int,
    snr_db: float,
    energy_removed: float,
    train_size: int | None,
    val_size: int | None,
    test_size: int | None,
) -> None:
    """Build AV-MNIST from real MNIST and FSDD files (docs/avmnist.md): PNG images and
    spectrograms, a Parquet manifest and meta.json.

    Example: omnifuse data avmnist --mnist data/mnist --fsdd data/fsdd/recordings --out avmnist
    """
    from omnifuse.data.avmnist import build_avmnist
    from omnifuse.data.avmnist_download import download_fsdd, download_mnist

    if download:
        download_mnist(mnist, progress=True)
        download_fsdd(fsdd, progress=True)
    manifest = build_avmnist(
        out,
        mnist=mnist,
        fsdd=fsdd,
        seed=seed,
        snr_db=snr_db,
        energy_removed=energy_removed,
        train_size=train_size,
        val_size=val_size,
        test_size=test_size,
        progress=True,
    )
    splits = json.loads((out / "meta.json").read_text())["splits"]
    click.echo(json.dumps({"manifest": str(manifest), "splits": splits}))


@data.command("folder")
@click.argument("root", type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    callback=not_folder,
    required=True,
    help="Manifest to write.",
)
def data_folder(root: Path, out: Path) -> None:
    """Write a manifest (.csv, .jsonl or .parquet) of the images under ROOT/<class>/ or
    ROOT/<train|val|test>/<class>/: columns id, [split,] image, label.

    Example: omnifuse data folder photos --out photos/manifest.csv
    """
    from omnifuse.data.formats import import_image_folder
    from omnifuse.manifest import read_manifest

    rows = read_manifest(import_image_folder(root, out)).rows
    click.echo(json.dumps({"manifest": str(out), "rows": len(rows)}))


@data.command("coco")
@click.argument("annotations", type=click.Path(path_type=Path))
@click.option("--images", type=click.Path(path_type=Path), required=True, help="Image folder.")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    callback=not_folder,
    required=True,
    help="Manifest to write.",
)
@click.option(
    "--per",
    type=click.Choice(["image", "caption"]),
    default="image",
    show_default=True,
    help="One row per image (its first caption) or per caption.",
)
@click.option(
    "--split",
    type=click.Choice(["train", "val", "test"]),
    default=None,
    help="The split of every row (default: 80/10/10 by a hash of the image id).",
)
def data_coco(annotations: Path, images: Path, out: Path, per: str, split: str | None) -> None:
    """Write a manifest (.csv, .jsonl or .parquet) from COCO-style caption ANNOTATIONS
    (captions_*.json): columns id, split, image, caption, image_id, caption_id.

    Example: omnifuse data coco captions_val2017.json --images val2017 --out coco.jsonl
    """
    from omnifuse.data.formats import import_coco_captions
    from omnifuse.manifest import read_manifest

    path = import_coco_captions(annotations, images, out, per=per, split=split)  # type: ignore[arg-type]
    click.echo(json.dumps({"manifest": str(out), "rows": len(read_manifest(path).rows)}))


@data.command("shard")
@click.argument("manifest", type=click.Path(path_type=Path))
@click.option("--config", "config_source", required=True, help="The run config (or preset:NAME).")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    callback=folder,
    required=True,
    help="Folder to write.",
)
@click.option("--rows-per-shard", type=click.IntRange(min=1), default=4096, show_default=True)
@click.option("--skip-bad", is_flag=True, help="Leave out unusable rows (listed in shards.json).")
@click.option(
    "--features",
    is_flag=True,
    help="Store frozen pretrained backbones' output tokens instead of their inputs.",
)
def data_shard(
    manifest: Path,
    config_source: str,
    out: Path,
    rows_per_shard: int,
    skip_bad: bool,
    features: bool,
) -> None:
    """Preprocess every row of MANIFEST as CONFIG reads it (statistics fitted on its training
    split) into Arrow IPC shards in --out; train from them with `data: {shards: DIR}`. With
    --features, each modality whose encoder is a frozen pretrained backbone (`train: none`)
    is stored as that backbone's features, so training from the shards never runs it.

    Example: omnifuse data shard data/manifest.parquet --config run.yaml --out data/shards
    """
    from omnifuse.config import parse_config, read_config_file
    from omnifuse.data.shards import write_shards

    raw = read_config_file(config_source)
    source = {k: v for k, v in raw.get("data", {}).items() if k not in ("dataset", "shards")}
    raw["data"] = {**source, "manifest": str(manifest)}
    meta = write_shards(
        parse_config(raw, config_source),
        out,
        rows_per_shard=rows_per_shard,
        skip_bad=skip_bad,
        features=features,
    )
    counts = {split: len(info["rows"]) for split, info in meta["splits"].items()}
    summary = {"shards": str(out), "rows": counts, "skipped": len(meta["skipped"])}
    click.echo(json.dumps(summary | {"features": sorted(meta["features"])}))


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

    config = load_config(config_source) if config_source else None
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


def main() -> None:
    cli()
