"""`omnifuse serve`: the HTTP service and search page, run by uvicorn."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import click

from omnifuse.errors import OmnifuseError


def loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@click.command()
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.option(
    "--index",
    "index_dir",
    type=click.Path(path_type=Path),
    required=True,
    help="The search index (written by `omnifuse index build`).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option(
    "--token",
    envvar="OMNIFUSE_TOKEN",
    default=None,
    help="Require 'Authorization: Bearer TOKEN' on every route but /health "
    "(also read from OMNIFUSE_TOKEN).",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="torch threads for the model (default: torch's, one per core).",
)
@click.option(
    "--max-upload-mb",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    help="Largest upload one request may send, in MB.",
)
def serve(
    model_dir: Path,
    index_dir: Path,
    host: str,
    port: int,
    token: str | None,
    threads: int | None,
    max_upload_mb: float,
) -> None:
    """Serve the model in MODEL_DIR and the search index INDEX over HTTP: /search, /embed,
    /predict, /files, the API docs at /docs and a search page at /.

    Example: omnifuse serve runs/world/model --index world-index --port 8000
    """
    import torch
    import uvicorn

    from omnifuse.serve import Limits, create_app

    if token is not None and not token.strip():
        raise OmnifuseError("--token: empty; give a token or leave the option out")
    if not loopback(host) and token is None:
        click.echo(
            f"warning: serving on {host} without a token: anyone who can reach it can search "
            "and read the collection's files (set --token or OMNIFUSE_TOKEN)",
            err=True,
        )
    if threads is not None:
        torch.set_num_threads(threads)
    limits = Limits(upload_bytes=int(max_upload_mb * 1_000_000))
    app = create_app(model_dir, index_dir, token=token, limits=limits)
    click.echo(f"serving on http://{host}:{port}/ (API docs at /docs)", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
