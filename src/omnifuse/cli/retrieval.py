"""`omnifuse index ...` (build, add, remove, info) and `omnifuse search`: cross-modal search
over an index of a collection, through the library's omnifuse.retrieval."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from omnifuse.cli.boundary import out_folder
from omnifuse.errors import ConfigError


@click.group()
def index() -> None:
    """Build, update and describe search indexes."""


def _ids(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


@index.command("build")
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.option("--data", type=click.Path(path_type=Path), required=True, help="The manifest.")
@click.option("--modality", required=True, help="The modality to index, e.g. image.")
@out_folder("Index folder.")
@click.option("--columns", default="", help="Manifest columns to store, e.g. scene_class,venue.")
@click.option("--task", default=None, help="The alignment task (default: the only one).")
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="KEY=VALUE",
    help="An index setting, e.g. --set kind=hnsw --set ef_search=64 (see `index info`).",
)
@click.option("--skip-bad", is_flag=True, help="Leave out unusable rows, listed in the index.")
def index_build(
    model_dir: Path,
    data: Path,
    modality: str,
    out: Path,
    columns: str,
    task: str | None,
    settings: tuple[str, ...],
    skip_bad: bool,
) -> None:
    """Embed every row of --data having --modality with the model in MODEL_DIR and write a
    search index to --out (exact below 50,000 rows, IVF-Flat above), with the modality
    gap measured when the rows also have another aligned modality. An interrupted build
    resumes from the chunks it wrote when run again.

    Example: omnifuse index build runs/world --data world/manifest.parquet --modality image
    --out indexes/world --columns scene_class,venue
    """
    from omnifuse.retrieval import build_index, parse_settings

    built = build_index(
        model_dir,
        data,
        modality,
        out,
        columns=_ids(columns),
        config=parse_settings(settings),
        task=task,
        skip_bad=skip_bad,
    )
    _summary(built.info(), "built")


def _summary(info: dict[str, Any], what: str) -> None:
    skipped = info.get("skipped_rows") or 0
    left = f"; left out {skipped} bad rows, listed in its skipped_rows.jsonl" if skipped else ""
    click.echo(
        f"{what} {info['path']}: {info['size']} {info['modality']} rows, {info['kind']} index{left}"
    )


@index.command("add")
@click.argument("index_dir", type=click.Path(path_type=Path))
@click.option("--data", type=click.Path(path_type=Path), required=True, help="The new rows.")
@click.option("--skip-bad", is_flag=True, help="Leave out unusable rows.")
def index_add(index_dir: Path, data: Path, skip_bad: bool) -> None:
    """Add the rows of --data (files inside the index's collection folder) to the index,
    embedded with the model it was built with; the old version stays live until the new
    one is complete.

    Example: omnifuse index add indexes/world --data world/more.parquet
    """
    from omnifuse.retrieval import add_to_index

    _summary(add_to_index(index_dir, data, skip_bad=skip_bad).info(), "updated")


@index.command("remove")
@click.argument("index_dir", type=click.Path(path_type=Path))
@click.option("--ids", required=True, help="Comma-separated ids to remove.")
def index_remove(index_dir: Path, ids: str) -> None:
    """Remove rows from the index by id; an id not in the index is refused and nothing changes.

    Example: omnifuse index remove indexes/world --ids 000001,000007
    """
    from omnifuse.retrieval import remove_from_index

    _summary(remove_from_index(index_dir, _ids(ids)).info(), "updated")


@index.command("info")
@click.argument("index_dir", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def index_info(index_dir: Path, as_json: bool) -> None:
    """Size, kind, parameters, model fingerprint, the modality gap and recall of an index.

    Example: omnifuse index info indexes/world --json
    """
    from omnifuse.retrieval import open_index

    info = open_index(index_dir).info()
    if as_json:
        click.echo(json.dumps(info))
        return
    model = info["model"]
    click.echo(f"index     {info['path']} ({info['version']})")
    click.echo(f"rows      {info['size']} {info['modality']} (root {info['root']})")
    click.echo(f"kind      {info['kind']} {json.dumps(info['params'])}")
    click.echo(f"model     {model['dir']} sha256 {model['files_sha256'][:16]}")
    click.echo(f"task      {info['task']} ({', '.join(info['aligned'])}), dim {info['dim']}")
    click.echo(f"columns   {', '.join(info['columns']) or '-'}")
    click.echo(f"skipped   {info['skipped_rows']} bad rows; {info['missing']} lacked the modality")
    click.echo(f"gap correction {'on' if info['gap_correction'] else 'off'}")
    for other, gap in (info["gap"] or {}).items():
        click.echo(f"  {other} vs {info['modality']} on {gap['pairs']} pairs:")
        for key, value in gap.items():
            if key != "pairs":
                click.echo(f"    {key:<30}{value:.4f}")
    for other, recall in (info["recall"] or {}).items():
        click.echo(f"  recall of {recall['queries']} {other} queries over the whole index:")
        for key, value in recall.items():
            if key != "queries":
                click.echo(f"    {key:<30}{value:.4f}")


@click.command("search")
@click.argument("index_dir", type=click.Path(path_type=Path))
@click.option(
    "--model",
    "model_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="The model the index was built with (default: the folder it records).",
)
@click.option("--text", default=None, help="Search with this text.")
@click.option("--image", type=click.Path(path_type=Path), default=None, help="An image file.")
@click.option("--audio", type=click.Path(path_type=Path), default=None, help="An audio file.")
@click.option("-k", "k", type=int, default=10, show_default=True, help="Results (1..1000).")
@click.option(
    "--where", multiple=True, metavar="COLUMN=VALUE", help="Only rows whose COLUMN is VALUE."
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of the table.")
def search(
    index_dir: Path,
    model_dir: Path | None,
    text: str | None,
    image: Path | None,
    audio: Path | None,
    k: int,
    where: tuple[str, ...],
    as_json: bool,
) -> None:
    """Search the index in INDEX_DIR with a text, an image or an audio file (any modality of
    the index's alignment task): the k nearest rows, with their scores and stored columns.

    Example: omnifuse search indexes/world --text "a large red circle" -k 5 --where venue=harbour
    """
    from omnifuse.model import OmnifuseModel
    from omnifuse.retrieval import Query, open_index
    from omnifuse.retrieval import search as run_search
    from omnifuse.retrieval.query import modality_of_kind

    given = {"--text": text, "--image": image, "--audio": audio}
    chosen = [name for name, value in given.items() if value is not None]
    if len(chosen) != 1:
        raise ConfigError("give exactly one of --text, --image or --audio to search with")
    filters = {}
    for item in where:
        column, equals, value = item.partition("=")
        if not equals or not column:
            raise ConfigError(f"--where {item!r}: write COLUMN=VALUE, e.g. --where venue=harbour")
        filters[column] = value
    opened = open_index(index_dir)
    directory = model_dir or Path(opened.meta["model"]["dir"])
    opened.check_model(directory)
    model = OmnifuseModel.from_pretrained(directory)
    if text is not None:
        query = Query(text=text)
    else:
        kind = "image" if image is not None else "audio"
        query = Query(file=image or audio, modality=modality_of_kind(opened, model, kind))
    hits = run_search(opened, model, query, k=k, where=filters or None)
    if as_json:
        click.echo(json.dumps({"index": str(index_dir), "k": k, "hits": [vars(h) for h in hits]}))
        return
    columns = opened.columns
    click.echo(f"{'rank':>4}  {'score':>7}  {'id':<14}" + "".join(f"  {c:<14}" for c in columns))
    for hit in hits:
        cells = "".join(f"  {hit.metadata.get(c)!s:<14}" for c in columns)
        click.echo(f"{hit.rank:>4}  {hit.score:>7.4f}  {hit.id:<14}{cells}")
    if not hits:
        click.echo("no rows match" + (" the filters" if filters else ""))
