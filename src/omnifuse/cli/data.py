"""`omnifuse data ...`: build, import, shard and validate datasets in the manifest format."""

from __future__ import annotations

import json
from pathlib import Path

import click

from omnifuse.cli.boundary import out_file, out_folder
from omnifuse.config import load_config


@click.group()
def data() -> None:
    """Build datasets in the manifest format."""


@data.command("world")
@out_folder()
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
@out_folder()
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
@out_file("Manifest to write.")
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
@out_file("Manifest to write.")
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
@out_folder("Folder to write.")
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
    checked = validate_manifest(manifest, config, progress=not as_json)
    bad, rows = checked.bad, len(checked.manifest.rows)
    unlabelled = {task: note["unlabelled"] for task, note in checked.labels.items()}
    if as_json:
        listed = [{"row": r.index + 1, "where": r.where, "problem": r.problem} for r in bad]
        click.echo(json.dumps({"rows": rows, "bad": listed, "unlabelled": unlabelled}))
    else:
        for row in bad:
            click.echo(str(row))
        for note in checked.labels.values():
            if "message" in note:
                click.echo(note["message"])
        summary = f"{len(bad)} of {rows} rows are bad" if bad else "no bad rows"
        click.echo(f"{manifest}: {summary}")
    if bad:
        raise SystemExit(1)
