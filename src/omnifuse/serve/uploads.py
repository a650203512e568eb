"""Uploaded files and texts as model inputs: limits, content checks, a temporary folder.

A request's uploads are copied into a fresh temporary folder under names the server chooses
(`upload-0.png`, never the client's file name), checked by content as well as by suffix, and
the folder is deleted when the request ends. Every refusal is a `RequestError` with an HTTP
status and one line.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from omnifuse.data.dataset import BadRow, Readers, read_row
from omnifuse.interfaces import Sample
from omnifuse.manifest import Manifest
from omnifuse.modalities.base import Modality

MB = 1_000_000
CHUNK = 1 << 16


class RequestError(Exception):
    """A request the server refuses: its HTTP status and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Limits:
    """What one request may send."""

    upload_bytes: int = 10 * MB  # all of a request's files together
    files: int = 16  # files in one /embed or /predict request
    texts: int = 64  # texts in one /embed or /predict request
    text_chars: int = 2_000  # characters in one text
    k: int = 100  # most results one search returns

    @property
    def body_bytes(self) -> int:
        """The largest request body accepted: the uploads and room for the form around them."""
        return self.upload_bytes + MB


# what a file's first bytes say it is, checked against the kind its suffix claims
IMAGE_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)
AUDIO_MAGIC = ((b"fLaC", "FLAC"), (b"OggS", "Ogg"))


def sniff(head: bytes) -> tuple[str, str] | None:
    """(kind, format) from a file's first bytes: ('image', 'PNG'), ('audio', 'WAV'), or None."""
    for magic, name in IMAGE_MAGIC:
        if head.startswith(magic):
            return "image", name
    for magic, name in AUDIO_MAGIC:
        if head.startswith(magic):
            return "audio", name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image", "WebP"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio", "WAV"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "audio", "AIFF"
    return None


def shown(name: str | None) -> str:
    """A client's file name as it may appear in a message: its last part, printable, short."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = "".join(c if c.isprintable() else "?" for c in base)
    return (base[:80] + "...") if len(base) > 80 else (base or "upload")


@dataclass(frozen=True)
class Upload:
    """One uploaded file, as the route received it."""

    name: str | None  # the client's file name (only its suffix is used, and only in messages)
    file: IO[bytes]


@dataclass(frozen=True)
class Stored:
    """An upload checked and written into the request's folder."""

    name: str  # as shown in messages and ids
    path: Path
    kind: str  # image, audio or text


class Inputs:
    """The uploads of one request in their temporary folder, and the model's rows of them.

    `suffixes` maps each file suffix the model reads to its modality kind."""

    def __init__(self, folder: Path, limits: Limits, suffixes: Mapping[str, str]) -> None:
        self.folder = folder
        self.limits = limits
        self.suffixes = suffixes
        self.received = 0  # bytes of every file so far
        self.stored: list[Stored] = []

    def store(self, upload: Upload) -> Stored:
        """Copy `upload` into the folder, refusing a suffix the model does not read, a file
        too large, empty, or whose content is not of the kind its suffix says."""
        name = shown(upload.name)
        suffix = Path(name).suffix.lower()
        if suffix not in self.suffixes:
            readable = ", ".join(sorted(self.suffixes))
            raise RequestError(
                415, f"{name}: not a file type this model reads (it reads {readable})"
            )
        kind = self.suffixes[suffix]
        path = self.folder / f"upload-{len(self.stored)}{suffix}"
        with path.open("wb") as out:
            while block := upload.file.read(CHUNK):
                self.received += len(block)
                if self.received > self.limits.upload_bytes:
                    raise RequestError(413, too_large(self.limits))
                out.write(block)
        self.check_content(name, path, kind)
        self.stored.append(Stored(name, path, kind))
        return self.stored[-1]

    def named(self, message: str) -> str:
        """`message` with the uploads' temporary paths replaced by their names."""
        for item in self.stored:
            message = message.replace(str(item.path), item.name)
        return message.replace(str(self.folder) + "/", "").replace(str(self.folder), "")

    def check_content(self, name: str, path: Path, kind: str) -> None:
        with path.open("rb") as file:
            head = file.read(16)
        if not head:
            raise RequestError(400, f"{name}: the file is empty")
        if kind == "text":
            try:
                path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                raise RequestError(415, f"{name}: not a UTF-8 text file") from None
            return
        found = sniff(head)
        if found is None or found[0] != kind:
            what = f"a {found[1]} {found[0]} file" if found else "not a format omnifuse knows"
            raise RequestError(415, f"{name}: not an {kind} file by its content ({what})")


def too_large(limits: Limits) -> str:
    return f"the upload is too large: more than {limits.upload_bytes / MB:g} MB in all"


@contextmanager
def request_folder() -> Iterator[Path]:
    """A temporary folder for one request's files, deleted when the request is done."""
    folder = Path(tempfile.mkdtemp(prefix="omnifuse-serve-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def suffix_kinds(modalities: Mapping[str, Modality]) -> dict[str, str]:
    """Each file suffix the model's modalities read, and the kind reading it."""
    return {s: m.config.kind for m in modalities.values() for s in m.suffixes}


def modality_for(modalities: Mapping[str, Modality], kind: str, chosen: str | None) -> str:
    """The model's modality that reads inputs of `kind`: `chosen` if given (it must be of that
    kind), else the only one of that kind."""
    names = sorted(n for n, m in modalities.items() if m.config.kind == kind)
    if chosen is not None:
        if chosen not in names:
            raise RequestError(
                400, f"modality '{chosen}': not one of the model's {kind} modalities {names}"
            )
        return chosen
    if not names:
        reads = ", ".join(f"{n} ({m.config.kind})" for n, m in sorted(modalities.items()))
        raise RequestError(400, f"the model has no {kind} modality; its modalities: {reads}")
    if len(names) > 1:
        raise RequestError(
            400, f"the model has several {kind} modalities ({', '.join(names)}); name one"
        )
    return names[0]


def samples_of(
    readers: Readers,
    folder: Path,
    texts: Sequence[str],
    stored: Sequence[Stored],
    *,
    modality: str | None = None,
) -> list[Sample]:
    """One sample per text (id `text-1`, ...) and per stored file (id: its name), each given
    to the model's modality of its kind; a row that cannot be read is a 400 naming it."""
    modalities = readers.modalities
    rows: list[dict[str, Any]] = []
    for i, text in enumerate(texts):
        name = modality_for(modalities, "text", modality)
        rows.append({"id": f"text-{i + 1}", modalities[name].column: text})
    for item in stored:
        name = modality_for(modalities, item.kind, modality)
        rows.append({"id": item.name, modalities[name].column: modalities[name].cell(item.path)})
    manifest = Manifest(folder / "inputs", rows)
    samples = []
    for index in range(len(rows)):
        result = read_row(manifest, index, readers)
        if isinstance(result, BadRow):
            raise RequestError(400, unreadable(rows[index]["id"], result, stored))
        samples.append(result)
    return samples


def unreadable(row_id: str, bad: BadRow, stored: Sequence[Stored]) -> str:
    """A bad row's problem named by the upload, without the server's temporary paths."""
    problem = bad.problem
    for item in stored:
        problem = problem.replace(str(item.path), item.name).replace(item.path.name, item.name)
    return f"{row_id}: {problem}"
