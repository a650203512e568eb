"""A generated corpus of bad and awkward inputs, each with the outcome omnifuse owes it.

    python -m tests.corpus OUT      # writes the corpus to OUT and prints what each case gave

Nothing here is a committed binary: every file is written by this module. Two parts:

- **Cells** (`write_cells`): one dataset folder whose manifest (written as CSV, JSON Lines
  and Parquet alike) holds good rows to train on and one row per case, a good row with one
  cell of one modality (image, audio, video, time series, vector, tabular, text) replaced by
  the case's. A case expects a located error (its row and column named), acceptance (the
  sample equal to that of a plain reference cell, within `atol`), or either.
- **Manifests** (`write_manifests`): whole files that are bad or awkward as manifests (byte
  order marks, duplicate or ragged columns, encodings, mixed label types...), each with a
  check of what reading it must give.
"""

from __future__ import annotations

import json
import math
import struct
import sys
import wave
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

SIZE = 16  # image and video frames are read at SIZE x SIZE
RATE = 8000  # audio sample rate
GOOD_ROWS = 36
COLUMNS = ["id", "image", "audio", "video", "series", "vector", "temp", "venue", "text", "label"]


@dataclass(frozen=True)
class Case:
    """One bad or awkward cell: `column` of a good row set to `cell`."""

    name: str
    column: str
    cell: str | None
    expect: str  # "error", "accept" or "either"
    match: str = ""  # a part of the error message (after the row and column)
    reference: str | None = None  # accept: a plain cell the sample must equal
    atol: float = 1e-6


def config(manifest: Path) -> dict[str, Any]:
    """A run config reading every column of the cell corpus."""
    return {
        "data": {"manifest": str(manifest), "val_fraction": 0.2, "test_fraction": 0.0},
        "modalities": {
            "image": {"kind": "image", "size": SIZE, "encoder": {"type": "image_conv", "width": 8}},
            "audio": {
                "kind": "audio",
                "sample_rate": RATE,
                "max_seconds": 0.5,
                "n_mels": 16,
                "n_fft": 256,
                "hop": 128,
            },
            "video": {
                "kind": "video",
                "frames": 2,
                "size": SIZE,
                "encoder": {"type": "video_tubelet", "patch": 8, "depth": 1},
            },
            "series": {
                "kind": "timeseries",
                "channels": 2,
                "max_length": 32,
                "encoder": {"type": "timeseries_patch", "patch": 8, "depth": 1},
            },
            "vector": {"kind": "vector", "dim": 4},
            "tabular": {"kind": "tabular", "numeric": ["temp"], "categorical": ["venue"]},
            "text": {
                "kind": "text",
                "max_length": 32,
                "encoder": {"type": "text_transformer", "depth": 1},
            },
        },
        "model": {
            "dim": 16,
            "fusion": {"type": "perceiver", "latents": 4, "depth": 1},
            "tasks": {"label": {"type": "classification", "target": "label"}},
        },
        "train": {"epochs": 1, "batch_size": 8, "seed": 0, "threads": 1},
    }


# --- files ---------------------------------------------------------------------------------------


def picture(seed: int, mode: str = "RGB", size: tuple[int, int] = (24, 20)) -> Image.Image:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB").convert(mode)


def smooth(size: tuple[int, int] = (24, 20)) -> Image.Image:
    """A gradient, which a lossy format keeps close (random pixels it does not)."""
    x, y = np.meshgrid(np.linspace(0, 1, size[0]), np.linspace(0, 1, size[1]))
    pixels = np.stack([x, y, (x + y) / 2], axis=2)
    return Image.fromarray(np.round(pixels * 255).astype(np.uint8), "RGB")


def save(image: Image.Image, path: Path, **options: Any) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **options)
    return path.name


def tone(seconds: float, rate: int = RATE, frequency: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * math.pi * frequency * t)).astype(np.float32)


def wav(path: Path, samples: np.ndarray, rate: int = RATE, width: int = 2) -> None:
    """PCM WAV of mono or (n, channels) float samples in [-1, 1], `width` bytes a sample."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = samples if samples.ndim == 2 else samples[:, None]
    if width == 1:
        data = np.round(frames * 127 + 128).astype(np.uint8).tobytes()
    else:
        data = np.round(frames * 32767).astype("<i2").tobytes()
    with wave.open(str(path), "wb") as out:
        out.setnchannels(frames.shape[1])
        out.setsampwidth(width)
        out.setframerate(rate)
        out.writeframes(data)


def float_wav(path: Path, samples: np.ndarray, rate: int = RATE) -> None:
    """IEEE-float WAV (format 3), written by hand: the wave module writes PCM only."""
    data = samples.astype("<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, rate, rate * 4, 4, 32)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)


def png_claiming(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims width x height 8-bit grey pixels (its data is a few bytes):
    a decompression bomb's shape, without the memory."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    data = zlib.compress(b"\x00" * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data))


def video(path: Path, array: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, array, allow_pickle=True)
    return path.name


# --- the cell corpus -----------------------------------------------------------------------------


def good_row(index: int) -> dict[str, Any]:
    rng = np.random.default_rng(100 + index)
    series = rng.normal(size=(12, 2)).round(3).tolist()
    return {
        "id": f"good-{index:02d}",
        "image": f"img/good-{index % 6}.png",
        "audio": f"aud/good-{index % 4}.wav",
        "video": f"vid/good-{index % 3}.npy",
        "series": json.dumps(series),
        "vector": json.dumps(rng.normal(size=4).round(3).tolist()),
        "temp": str(round(float(rng.normal(20, 5)), 2)),
        "venue": ["hall", "park", "shop"][index % 3],
        "text": ["a red square", "two blue circles", "the green line"][index % 3],
        "label": f"c{index % 2}",
    }


def write_cells(root: Path) -> tuple[list[dict[str, Any]], list[Case]]:
    """Write the cell corpus's files under `root` (and one file outside it); return the
    manifest rows and the cases (case i is row GOOD_ROWS + i)."""
    img, aud, vid = root / "img", root / "aud", root / "vid"
    for folder in (img, aud, vid):
        folder.mkdir(parents=True, exist_ok=True)
    outside = root.parent / f"{root.name}-outside"
    outside.mkdir(exist_ok=True)
    for i in range(6):
        save(picture(i), img / f"good-{i}.png")
    for i in range(4):
        wav(aud / f"good-{i}.wav", tone(0.6, frequency=300 + 100 * i))
    for i in range(3):
        video(
            vid / f"good-{i}.npy",
            np.random.default_rng(i).integers(0, 256, (3, 12, 12, 3), np.uint8),
        )
    return [good_row(i) for i in range(GOOD_ROWS)], [
        *image_cases(img, outside),
        *audio_cases(aud),
        *video_cases(vid),
        *number_cases(root),
        *text_cases(),
    ]


def image_cases(img: Path, outside: Path) -> list[Case]:
    base = picture(7)
    save(base, img / "ref.png")
    (img / "truncated.png").write_bytes((img / "ref.png").read_bytes()[:60])
    (img / "empty.png").write_bytes(b"")
    (img / "text.png").write_text("not an image\n")
    png_claiming(img / "bomb.png", 30000, 30000)
    grey = picture(8, "L")
    save(grey, img / "grey-ref.png")
    grey16 = np.asarray(grey, dtype=np.uint16) * 257
    Image.fromarray(grey16).save(img / "grey16.png")  # mode I;16
    save(Image.fromarray(np.asarray(grey, dtype=np.int32) * 257, "I"), img / "grey32.tif")
    floats = np.asarray(grey, dtype=np.float32) / 255.0
    save(Image.fromarray(floats, "F"), img / "float.tif")
    save(base.convert("P"), img / "palette.png")
    save(base.convert("P").convert("RGB"), img / "palette-ref.png")
    opaque = base.convert("RGBA")
    save(opaque, img / "rgba-opaque.png")
    save(grey.convert("LA"), img / "la-opaque.png")
    gradient = smooth()
    save(gradient.convert("CMYK"), img / "cmyk.jpg", quality=95)
    save(gradient, img / "rgb.jpg", quality=95)
    rotated = gradient.transpose(Image.Transpose.ROTATE_90)  # stored turned; EXIF turns it back
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation 6: shown turned 90 degrees clockwise
    save(rotated, img / "exif.jpg", quality=95, exif=exif.tobytes())
    save(gradient, img / "plain.jpg", quality=95)
    save(base, img / "ref.bmp")
    save(base, img / "ref.gif")
    save(picture(9, size=(1, 1)), img / "one-pixel.png")
    save(picture(9, size=(1, 1)), img / "one-pixel-ref.png")
    frames = [picture(7), picture(11)]
    frames[0].save(img / "animated.gif", save_all=True, append_images=frames[1:])
    with Image.open(img / "animated.gif") as first:  # its first frame, decoded plainly
        save(first.convert("RGB"), img / "animated-ref.png")
    save(picture(12), outside / "elsewhere.png")
    for link, target in (
        (img / "link-out.png", outside / "elsewhere.png"),
        (img / "link-in.png", img / "ref.png"),
    ):
        link.unlink(missing_ok=True)
        link.symlink_to(target)
    (img / "folder.png").mkdir(exist_ok=True)
    return [
        Case("image truncated", "image", "img/truncated.png", "error", "truncated.png"),
        Case("image empty file", "image", "img/empty.png", "error", "empty.png"),
        Case("image text file", "image", "img/text.png", "error", "text.png"),
        Case("image bomb header", "image", "img/bomb.png", "error", "bomb.png"),
        Case(
            "image 16-bit grey", "image", "img/grey16.png", "accept", "", "img/grey-ref.png", 1e-2
        ),
        Case("image 32-bit int", "image", "img/grey32.tif", "accept", "", "img/grey-ref.png", 1e-2),
        Case(
            "image 32-bit float", "image", "img/float.tif", "accept", "", "img/grey-ref.png", 1e-2
        ),
        Case("image palette", "image", "img/palette.png", "accept", "", "img/palette-ref.png"),
        Case("image rgba opaque", "image", "img/rgba-opaque.png", "accept", "", "img/ref.png"),
        Case("image la opaque", "image", "img/la-opaque.png", "accept", "", "img/grey-ref.png"),
        Case("image cmyk jpeg", "image", "img/cmyk.jpg", "accept", "", "img/rgb.jpg", 0.2),
        Case("image exif orientation", "image", "img/exif.jpg", "accept", "", "img/plain.jpg", 0.1),
        Case("image bmp", "image", "img/ref.bmp", "accept", "", "img/ref.png"),
        Case(
            "image one pixel", "image", "img/one-pixel.png", "accept", "", "img/one-pixel-ref.png"
        ),
        Case(
            "image animated gif", "image", "img/animated.gif", "accept", "", "img/animated-ref.png"
        ),
        Case("image missing file", "image", "img/nowhere.png", "error", "not found"),
        Case("image folder", "image", "img/folder.png", "error", "folder.png"),
        Case(
            "image parent path", "image", f"../{outside.name}/elsewhere.png", "error", "elsewhere"
        ),
        Case(
            "image absolute outside", "image", str(outside / "elsewhere.png"), "error", "elsewhere"
        ),
        Case("image symlink out", "image", "img/link-out.png", "error", "link-out.png"),
        Case("image symlink inside", "image", "img/link-in.png", "accept", "", "img/ref.png"),
        Case("image empty cell", "image", "", "accept", "", None),
    ]


def audio_cases(aud: Path) -> list[Case]:
    signal = tone(0.6)
    wav(aud / "ref.wav", signal)
    whole = (aud / "ref.wav").read_bytes()
    (aud / "truncated.wav").write_bytes(whole[: len(whole) // 2])
    (aud / "empty.wav").write_bytes(b"")
    (aud / "garbage.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 8)
    wav(aud / "stereo.wav", np.stack([signal, signal], 1))
    wav(aud / "eight-bit.wav", signal, width=1)
    float_wav(aud / "float.wav", signal)
    wav(aud / "short.wav", tone(0.01))
    wav(aud / "no-frames.wav", np.zeros(0, np.float32))
    broken = signal.copy()
    broken[10] = np.nan
    float_wav(aud / "nan.wav", broken)
    wav(aud / "long.wav", tone(600.0))  # ten minutes; the first half second is kept
    wav(aud / "long-ref.wav", tone(0.6))
    wav(aud / "fast.wav", tone(0.6, rate=16000), rate=16000)
    return [
        Case("audio truncated", "audio", "aud/truncated.wav", "error", "truncated.wav"),
        Case("audio empty file", "audio", "aud/empty.wav", "error", "empty.wav"),
        Case("audio garbage", "audio", "aud/garbage.wav", "error", "garbage.wav"),
        Case("audio stereo", "audio", "aud/stereo.wav", "accept", "", "aud/ref.wav", 1e-3),
        Case("audio 8-bit", "audio", "aud/eight-bit.wav", "accept", "", "aud/ref.wav", 0.01),
        Case("audio float", "audio", "aud/float.wav", "accept", "", "aud/ref.wav", 1e-4),
        Case("audio too short", "audio", "aud/short.wav", "error", "short.wav"),
        Case("audio no frames", "audio", "aud/no-frames.wav", "error", "no-frames.wav"),
        Case("audio nan sample", "audio", "aud/nan.wav", "error", "nan.wav"),
        Case("audio ten minutes", "audio", "aud/long.wav", "accept", "", "aud/long-ref.wav", 1e-3),
        Case("audio other rate", "audio", "aud/fast.wav", "either"),
        Case("audio missing", "audio", "aud/nowhere.wav", "error", "not found"),
    ]


def video_cases(vid: Path) -> list[Case]:
    frames = np.random.default_rng(5).integers(0, 256, (3, 12, 12, 1), np.uint8)
    video(vid / "grey.npy", frames)
    video(vid / "grey-ref.npy", np.repeat(frames, 3, axis=-1))
    video(vid / "floats.npy", frames.astype(np.float32))
    video(vid / "flat.npy", frames[0, :, :, 0])
    video(vid / "four.npy", np.repeat(frames, 4, axis=-1))
    video(vid / "no-frames.npy", frames[:0])
    np.save(vid / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    video(vid / "ref.npy", np.repeat(frames, 3, axis=-1))
    (vid / "cut.npy").write_bytes((vid / "ref.npy").read_bytes()[:100])
    (vid / "text.npy").write_text("not numpy\n")
    return [
        Case("video grey frames", "video", "vid/grey.npy", "accept", "", "vid/grey-ref.npy"),
        Case("video floats", "video", "vid/floats.npy", "error", "float32"),
        Case("video one frame plane", "video", "vid/flat.npy", "error", "shape"),
        Case("video four channels", "video", "vid/four.npy", "error", "shape"),
        Case("video no frames", "video", "vid/no-frames.npy", "error", "shape"),
        Case("video pickled objects", "video", "vid/objects.npy", "error", "objects.npy"),
        Case("video truncated", "video", "vid/cut.npy", "error", "cut.npy"),
        Case("video text file", "video", "vid/text.npy", "error", "text.npy"),
    ]


def number_cases(root: Path) -> list[Case]:
    np.save(root / "series.npy", np.array([[1.0, 2.0], [3.0, 4.0]], np.float32))
    (root / "series.csv").write_text("a,b\n1,2\n3,4\n")
    np.save(root / "vector.npy", np.array([1.0, 2.0, 3.0, 4.0], np.float32))
    return [
        Case(
            "series with a gap", "series", "[[1, NaN], [2, 3]]", "accept", "", "[[1, NaN], [2, 3]]"
        ),
        Case("series infinite", "series", "[[1, Infinity], [2, 3]]", "error", "infinite"),
        Case("series words", "series", '[["a", "b"]]', "error", "series"),
        Case("series ragged", "series", "[[1, 2], [3]]", "error", "series"),
        Case("series wrong channels", "series", "[[1, 2, 3]]", "error", "channels"),
        Case("series not json", "series", "[1, 2", "error", "JSON"),
        Case("series npy", "series", "series.npy", "accept", "", "[[1, 2], [3, 4]]"),
        Case("series csv", "series", "series.csv", "accept", "", "[[1, 2], [3, 4]]"),
        Case("vector wrong size", "vector", "[1, 2, 3]", "error", "shape"),
        Case("vector nan", "vector", "[1, NaN, 3, 4]", "error", "NaN"),
        Case("vector words", "vector", "abc", "error", "vector"),
        Case("vector npy", "vector", "vector.npy", "accept", "", "[1, 2, 3, 4]"),
        Case("vector nested", "vector", "[[1, 2, 3, 4]]", "accept", "", "[1, 2, 3, 4]"),
        Case("tabular words", "temp", "warm", "error", "temp"),
        Case("tabular infinite", "temp", "inf", "error", "infinite"),
        Case("tabular exponent", "temp", "2e1", "accept", "", "20"),
        Case("tabular spaces", "temp", " 20 ", "accept", "", "20"),
        Case("tabular unseen category", "venue", "moon", "accept", "", "nowhere-else"),
    ]


def text_cases() -> list[Case]:
    long = "a red square " * 80_000  # a megabyte: cut to max_chars before tokenising
    return [
        Case("text megabyte cell", "text", long, "accept", "", long[:100_000]),
        Case("text emoji", "text", "a red \U0001f7e5", "accept", "", "a red \U0001f7e5"),
        Case("text control characters", "text", "a\x00red\x07square", "either"),
        Case("text a path is text", "text", "txt/hello.txt", "accept", "", "txt/hello.txt"),
        Case("text newlines", "text", "a red\nsquare", "accept", "", "a red\nsquare"),
        Case("text spaces only", "text", "   ", "either"),
    ]


def rows_with_cases(good: list[dict[str, Any]], cases: list[Case]) -> list[dict[str, Any]]:
    rows = list(good)
    for number, case in enumerate(cases):
        row = dict(good[number % len(good)], id=f"case-{number:03d}")
        row[case.column] = case.cell
        rows.append(row)
    return rows


def write_manifest(rows: list[dict[str, Any]], path: Path) -> Path:
    """`rows` (all cells strings or None) as CSV, JSON Lines or Parquet, by `path`'s suffix."""
    if path.suffix == ".parquet":
        pq.write_table(
            pa.table({c: pa.array([r[c] for r in rows], pa.string()) for c in COLUMNS}), path
        )
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        import csv

        with path.open("w", newline="") as file:
            writer = csv.DictWriter(file, COLUMNS)
            writer.writeheader()
            writer.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in rows)
    return path


# --- the manifest corpus -------------------------------------------------------------------------


@dataclass(frozen=True)
class ManifestCase:
    """A whole manifest file, and what reading it must give: an error whose message holds
    `match`, a row whose problem (kept for loading to report) holds `match`, or rows that
    `check` accepts."""

    name: str
    path: Path
    expect: str  # "error", "bad row" or "accept"
    match: str = ""
    check: Callable[[list[dict[str, Any]]], bool] | None = None


def write_manifests(folder: Path) -> list[ManifestCase]:
    folder.mkdir(parents=True, exist_ok=True)

    def text(name: str, content: str, encoding: str = "utf-8") -> Path:
        path = folder / name
        path.write_bytes(content.encode(encoding))
        return path

    header = "id,caption,split\n"
    duplicates = pa.table([pa.array(["1", "2"]), pa.array(["a", "b"])], names=["id", "id"])
    pq.write_table(duplicates, folder / "duplicate.parquet")
    (folder / "garbage.parquet").write_bytes(b"PAR1garbagePAR1")
    (folder / "folder.csv").mkdir(exist_ok=True)
    big = "y" * 200_000
    return [
        ManifestCase(
            "csv byte order mark",
            text("bom.csv", "\ufeffsplit,id\ntrain,1\nval,2\n"),
            "accept",
            check=lambda rows: rows == [{"split": "train", "id": "1"}, {"split": "val", "id": "2"}],
        ),
        ManifestCase("csv duplicate column", text("dup.csv", "id,id\n1,2\n"), "error", "'id'"),
        ManifestCase(
            "csv missing field",
            text("short.csv", header + "1,a,train\n2,b\n"),
            "bad row",
            "line 3: 2 fields, but the header has 3 columns",
        ),
        ManifestCase(
            "csv extra field",
            text("long.csv", header + "1,a,train,x\n"),
            "bad row",
            "line 2: 4 fields, but the header has 3 columns",
        ),
        ManifestCase(
            "csv latin-1",
            text("latin.csv", header + "1,caf\xe9,train\n", "latin-1"),
            "error",
            "UTF-8",
        ),
        ManifestCase(
            "csv 200 KB cell",
            text("big.csv", header + f"1,{big},train\n"),
            "accept",
            check=lambda rows: rows[0]["caption"] == big,
        ),
        ManifestCase("csv empty file", text("empty.csv", ""), "error", "empty.csv"),
        ManifestCase("csv header only", text("header.csv", header), "error", "no rows"),
        ManifestCase(
            "csv nul byte",
            text("nul.csv", header + "1,a\x00b,train\n"),
            "accept",
            check=lambda rows: rows[0]["caption"] == "a\x00b",
        ),
        ManifestCase(
            "csv crlf",
            text("crlf.csv", header.replace("\n", "\r\n") + "1,a,train\r\n"),
            "accept",
            check=lambda rows: rows == [{"id": "1", "caption": "a", "split": "train"}],
        ),
        ManifestCase(
            "csv quoted newline",
            text("newline.csv", header + '1,"two\nlines",train\n'),
            "accept",
            check=lambda rows: rows[0]["caption"] == "two\nlines",
        ),
        ManifestCase(
            "jsonl duplicate key", text("dup.jsonl", '{"id": "1", "id": "2"}\n'), "error", "'id'"
        ),
        ManifestCase(
            "jsonl array line", text("array.jsonl", '{"id": "1"}\n[1, 2]\n'), "error", "line 2"
        ),
        ManifestCase(
            "jsonl cut line", text("cut.jsonl", '{"id": "1"}\n{"id": \n'), "error", "line 2"
        ),
        ManifestCase(
            "jsonl latin-1", text("latin.jsonl", '{"id": "caf\xe9"}\n', "latin-1"), "error", "UTF-8"
        ),
        ManifestCase(
            "jsonl blank lines",
            text("blank.jsonl", '\n{"id": "1"}\n\n'),
            "accept",
            check=lambda rows: rows == [{"id": "1"}],
        ),
        ManifestCase("parquet duplicate column", folder / "duplicate.parquet", "error", "'id'"),
        ManifestCase("parquet garbage", folder / "garbage.parquet", "error", "garbage.parquet"),
        ManifestCase(
            "unknown format", text("rows.txt", header), "error", "unknown manifest format"
        ),
        ManifestCase("folder as manifest", folder / "folder.csv", "error", "folder.csv"),
        ManifestCase("missing manifest", folder / "nowhere.csv", "error", "not found"),
    ]


def cell_outcomes(root: Path, cases: list[Case], manifest: Path) -> list[dict[str, Any]]:
    """What `omnifuse data validate` (with the corpus config) and a plain reference read
    give each cell case of `manifest`: a located error, an acceptance that matches its
    reference, or what went wrong (a traceback, a misread, an error naming no row)."""
    import torch

    from omnifuse.config import parse_config
    from omnifuse.data.dataset import Readers, fit_config
    from omnifuse.data.validate import validate_manifest
    from omnifuse.manifest import read_manifest

    run_config = parse_config(config(manifest))
    bad = validate_manifest(manifest, run_config).bad
    found = {row.index: str(row) for row in bad}
    readers = Readers.of(fit_config(run_config, read_manifest(manifest), range(GOOD_ROWS)))
    outcomes = []
    for number, case in enumerate(cases):
        message = found.get(GOOD_ROWS + number)
        outcome = "located error" if message else "accepted"
        if message and (
            f"row {GOOD_ROWS + number + 1}" not in message or case.match not in message
        ):
            outcome = "unlocated error"
        elif message is None and case.expect == "error":
            outcome = "silent misread"
        elif message is None and case.expect == "accept":
            reader = next(m for m in readers.modalities.values() if case.column in m.columns())
            mine, theirs = (
                decoded(reader, case.column, c, root) for c in (case.cell, case.reference)
            )
            same = (mine is None and theirs is None) or (
                mine is not None
                and theirs is not None
                and mine.shape == theirs.shape
                and torch.allclose(mine, theirs, atol=case.atol, rtol=0, equal_nan=True)
            )
            outcome = "accepted" if same else "silent misread"
        elif message is not None and case.expect == "accept":
            outcome = "wrongly refused"
        outcomes.append(
            {"case": case.name, "expect": case.expect, "outcome": outcome, "message": message}
        )
    return outcomes


def decoded(reader: Any, column: str, cell: str | None, root: Path) -> Any:
    """A cell as its modality decodes it, before normalisation (audio as its waveform):
    what a plain decode of the reference is compared with. A kind that decodes no file
    (tabular, text, vector) gives its loaded tensor."""
    from omnifuse.modalities.base import is_missing
    from omnifuse.registry import create_modality

    if cell is None or is_missing(cell):
        return None
    if reader.config.kind == "audio":
        waves = reader.config.model_copy(update={"features": "waveform"})
        reader = create_modality(reader.name, waves)
    if reader.config.kind in ("tabular", "text", "vector"):
        return reader.load(good_row(0) | {column: cell}, root)
    return reader.read(cell, root)


def manifest_outcomes(cases: list[ManifestCase]) -> list[dict[str, Any]]:
    from omnifuse.errors import DataError
    from omnifuse.manifest import read_manifest

    outcomes = []
    for case in cases:
        try:
            manifest = read_manifest(case.path)
            rows = list(manifest.rows)
        except DataError as error:
            located = case.match in str(error) and "\n" not in str(error)
            outcome = "located error" if located else "unlocated error"
            if case.expect == "accept":
                outcome = "wrongly refused"
            outcomes.append({"case": case.name, "outcome": outcome, "message": str(error)})
            continue
        except Exception as error:  # what must never happen
            outcomes.append({"case": case.name, "outcome": "traceback", "message": repr(error)})
            continue
        if case.expect == "bad row":  # read, with the row's problem kept for loading
            problems = getattr(manifest, "problems", {})  # (absent before issue 15)
            located = any(case.match in problem for problem in problems.values())
            outcome = "located error" if located else "silent misread"
        else:
            good = case.expect == "accept" and case.check is not None and case.check(rows)
            outcome = "accepted" if good else "silent misread"
        outcomes.append({"case": case.name, "outcome": outcome, "message": None})
    return outcomes


def main() -> None:
    """Write the corpus to argv[1], run every case, print each outcome and the counts."""
    from collections import Counter

    from omnifuse.errors import DataError

    out = Path(sys.argv[1])
    good, cases = write_cells(out / "cells")
    outcomes = []
    for suffix in (".csv", ".jsonl", ".parquet"):
        manifest = write_manifest(rows_with_cases(good, cases), out / "cells" / f"manifest{suffix}")
        try:
            found = cell_outcomes(out / "cells", cases, manifest)
        except Exception as error:  # every case of the manifest at once
            outcome = "whole manifest refused" if isinstance(error, DataError) else "traceback"
            found = [{"case": c.name, "outcome": outcome, "message": repr(error)} for c in cases]
        outcomes += [o | {"format": suffix[1:]} for o in found]
    outcomes += manifest_outcomes(write_manifests(out / "manifests"))
    for outcome in outcomes:
        print(json.dumps(outcome)[:300])
    print(json.dumps(dict(Counter(o["outcome"] for o in outcomes)) | {"inputs": len(outcomes)}))


if __name__ == "__main__":
    main()
