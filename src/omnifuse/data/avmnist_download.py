"""The AV-MNIST sources from their canonical addresses: the four MNIST IDX files and the
Free Spoken Digit Dataset's recordings, each written atomically.

    download_mnist("data/mnist")
    download_fsdd("data/fsdd/recordings")
"""

from __future__ import annotations

import hashlib
import io
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Mapping
from pathlib import Path

from tqdm import tqdm

from omnifuse.data.avmnist import (
    _MNIST_PARTS,
    Recording,
    list_recordings,
    mnist_files,
    parse_recording,
)
from omnifuse.errors import DataError

MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
FSDD_URL = "https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/heads/master.zip"
# the canonical gzip files (as torchvision checks them)
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}


def download_mnist(
    directory: Path | str,
    *,
    url: str = MNIST_URL,
    checksums: Mapping[str, str] | None = MNIST_MD5,
    progress: bool = False,
) -> dict[str, Path]:
    """Fetch the four MNIST gzip files into `directory` (those already there are kept),
    each written atomically and checked against its MD5 when `checksums` knows it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for stem in _MNIST_PARTS.values():
        name = f"{stem}.gz"
        if (directory / name).is_file():
            continue
        data = _fetch(url.rstrip("/") + "/" + name, progress=progress)
        expected = (checksums or {}).get(name)
        if expected is not None and hashlib.md5(data).hexdigest() != expected:
            raise DataError(f"{url}{name}: checksum mismatch (MD5 is not {expected})")
        _atomic_write(directory / name, data)
    return mnist_files(directory)


def download_fsdd(
    directory: Path | str, *, url: str = FSDD_URL, progress: bool = False
) -> list[Recording]:
    """Fetch the FSDD archive and write its `recordings/*.wav` into `directory` (atomically:
    the folder appears complete or not at all); an existing non-empty folder is kept."""
    directory = Path(directory)
    if directory.is_dir() and any(directory.glob("*.wav")):
        return list_recordings(directory)
    data = _fetch(url, progress=progress)
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = [
            m
            for m in archive.namelist()
            if m.endswith(".wav") and Path(m).parent.name == "recordings"
        ]
    except zipfile.BadZipFile:
        raise DataError(f"{url}: not a zip archive") from None
    if not members:
        raise DataError(f"{url}: no recordings/*.wav in the archive")
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        for member in members:
            parse_recording(member)  # refuses names that are not FSDD's
            (tmp / Path(member).name).write_bytes(archive.read(member))
        tmp.chmod(0o755)
        if directory.is_dir():
            directory.rmdir()  # empty: checked above
        tmp.rename(directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return list_recordings(directory)


def _fetch(url: str, *, progress: bool) -> bytes:
    """The bytes at `url`; a DataError of one line when it cannot be reached."""
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            name = url.rsplit("/", 1)[-1]
            bar = tqdm(total=total, desc=name, unit="B", unit_scale=True, disable=not progress)
            parts = []
            while block := response.read(1 << 20):
                parts.append(block)
                bar.update(len(block))
            bar.close()
    except urllib.error.URLError as error:
        reason = getattr(error, "reason", error)
        raise DataError(
            f"cannot download {url}: {reason} (offline? fetch it on a machine with internet "
            "and pass the folder instead)"
        ) from None
    except (OSError, ValueError) as error:
        raise DataError(f"cannot download {url}: {error}") from None
    data = b"".join(parts)
    if total is not None and len(data) != total:
        raise DataError(f"cannot download {url}: got {len(data)} of {total} bytes")
    return data


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_bytes(data)
    tmp.replace(path)
