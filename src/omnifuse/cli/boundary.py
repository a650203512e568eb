"""The command line's error boundary and the checks its options share.

Whatever escapes a command prints as one line on stderr with exit code 1 (`--debug`: the
traceback instead); an --out is checked before any work.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from omnifuse.errors import OmnifuseError

F = TypeVar("F", bound=Callable[..., Any])


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
    package = Path(__file__).resolve().parent.parent  # src/omnifuse
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


def out_folder(help: str = "Output folder.") -> Callable[[F], F]:
    """The --out option of a command that writes a folder."""
    return click.option(
        "--out", type=click.Path(path_type=Path), callback=folder, required=True, help=help
    )


def out_file(help: str) -> Callable[[F], F]:
    """The --out option of a command that writes one file."""
    return click.option(
        "--out", type=click.Path(path_type=Path), callback=not_folder, required=True, help=help
    )
