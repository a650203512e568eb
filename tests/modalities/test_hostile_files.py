"""Hostile and damaged inputs: each a located one-line DataError, nothing misread, nothing read
from outside the dataset folder, no file read further than its cut needs."""

from __future__ import annotations

import struct
import tracemalloc
import wave
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image

from omnifuse.config import DataConfig
from omnifuse.data.dataset import BadRow, Readers, read_row
from omnifuse.errors import DataError
from omnifuse.manifest import Manifest
from omnifuse.modalities.audio import AudioConfig
from omnifuse.modalities.base import LooseFile, Modality
from omnifuse.modalities.image import ImageConfig, ImageModality
from omnifuse.modalities.text import TextConfig
from omnifuse.modalities.timeseries import TimeSeriesConfig
from omnifuse.modalities.vector import VectorConfig
from omnifuse.modalities.video import VideoConfig
from omnifuse.registry import create_modality


def raw(modality: Modality, cell: Any, root: Path) -> np.ndarray:
    """The image read before normalisation, as (size, size, channels)."""
    return modality.read(cell, root).permute(1, 2, 0).numpy()


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height RGB pixels, with almost no pixel data."""

    def chunk(name: bytes, data: bytes) -> bytes:
        body = name + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


# --- one place for every reader's errors ----------------------------------------------------


def test_any_exception_while_reading_a_cell_is_a_located_data_error(tmp_path: Path, monkeypatch):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")

    def broken(self: Any, value: Any, root: Path) -> torch.Tensor:
        struct.unpack("<I", b"\0")  # what a decoder meeting a short header raises
        raise AssertionError

    modality = create_modality("photo", ImageConfig(size=8))
    # a DataError raised by the kind keeps its message
    with pytest.raises(DataError, match=r"^column 'photo': file not found: gone.png$"):
        modality.load({"photo": "gone.png"}, tmp_path)
    monkeypatch.setattr(ImageModality, "read", broken)
    with pytest.raises(DataError, match=r"^column 'photo': cannot read 'a.png': error: unpack"):
        modality.load({"photo": "a.png"}, tmp_path)
    # read_row adds the row; fitting skips the cell instead of stopping
    manifest = Manifest(tmp_path / "m.jsonl", [{"id": "x", "photo": "a.png"}])
    bad = read_row(manifest, 0, Readers({"photo": modality}, {}))
    assert isinstance(bad, BadRow)
    assert str(bad).startswith("m.jsonl row 1 (id x), column 'photo': cannot read 'a.png'")
    assert modality.fit(manifest, [0]).mean is None


def test_a_message_is_one_line_and_the_value_is_cut(tmp_path: Path, monkeypatch):
    def broken(self: Any, value: Any, root: Path) -> torch.Tensor:
        raise EOFError("first line\nsecond line")

    monkeypatch.setattr(ImageModality, "read", broken)
    modality = create_modality("photo", ImageConfig(size=8))
    with pytest.raises(DataError) as error:
        modality.load({"photo": "x" * 500 + ".png"}, tmp_path)
    message = str(error.value)
    assert "\n" not in message and message.endswith("EOFError: first line second line")
    assert len(message) < 150


# --- images ---------------------------------------------------------------------------------


def test_16_bit_greyscale_is_divided_by_65535_not_read_as_white(tmp_path: Path):
    values = np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000
    Image.fromarray(values).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    expected = values.astype(np.float32) / 65535
    grey = raw(create_modality("image", ImageConfig(size=8, channels=1)), "g16.png", tmp_path)
    np.testing.assert_allclose(grey[..., 0], expected, atol=1e-6)
    rgb = raw(create_modality("image", ImageConfig(size=8)), "g16.png", tmp_path)
    np.testing.assert_allclose(rgb, np.repeat(expected[..., None], 3, axis=2), atol=1e-6)


def test_32_bit_integer_and_float_images_are_scaled_by_their_range(tmp_path: Path):
    integers = (np.arange(64, dtype=np.int64).reshape(8, 8) - 8) * 30_000_000
    Image.fromarray(integers.astype(np.int32)).save(tmp_path / "i.tif")
    floats = np.linspace(-0.5, 1.5, 64, dtype=np.float32).reshape(8, 8)
    Image.fromarray(floats).save(tmp_path / "f.tif")
    assert Image.open(tmp_path / "i.tif").mode == "I"
    assert Image.open(tmp_path / "f.tif").mode == "F"
    modality = create_modality("image", ImageConfig(size=8, channels=1))
    np.testing.assert_allclose(
        raw(modality, "i.tif", tmp_path)[..., 0], np.clip(integers / (2**31 - 1), 0, 1), atol=1e-6
    )
    np.testing.assert_allclose(raw(modality, "f.tif", tmp_path)[..., 0], np.clip(floats, 0, 1))
    # 16-bit values in a 32-bit mode (as Pillow opens many 16-bit files): divided by 65535
    sixteen = np.arange(64, dtype=np.int32).reshape(8, 8) * 1000
    Image.fromarray(sixteen).save(tmp_path / "i16.tif")
    assert Image.open(tmp_path / "i16.tif").mode == "I"
    np.testing.assert_allclose(
        raw(modality, "i16.tif", tmp_path)[..., 0], sixteen / 65535, atol=1e-6
    )
    nan = floats.copy()
    nan[0, 0] = np.nan
    Image.fromarray(nan).save(tmp_path / "nan.tif")
    with pytest.raises(DataError, match=r"column 'image': cannot read image nan.tif: NaN pixels"):
        modality.load({"image": "nan.tif"}, tmp_path)


def test_transparency_is_composited_onto_white(tmp_path: Path):
    palette = Image.new("P", (8, 8), 0)
    palette.putpalette([255, 0, 0, 0, 255, 0])
    palette.paste(1, (0, 0, 8, 4))  # top half green, bottom half red made transparent
    palette.save(tmp_path / "p.png", transparency=0)
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[:4] = (0, 0, 255, 255)  # opaque blue
    rgba[4:] = (255, 0, 0, 0)  # transparent red
    rgba[4:, 4:] = (0, 0, 0, 51)  # black at 20%
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    Image.new("LA", (8, 8), (0, 102)).save(tmp_path / "la.png")  # black at 40%
    palette_alpha = Image.new("PA", (8, 8), (0, 0))  # red, transparent
    palette_alpha.putpalette([255, 0, 0, 0, 255, 0])
    palette_alpha.paste((1, 255), (0, 0, 8, 4))  # top half opaque green
    palette_alpha.save(tmp_path / "pa.tif")
    assert Image.open(tmp_path / "pa.tif").mode == "PA"
    modality = create_modality("image", ImageConfig(size=8))

    expected = np.ones((8, 8, 3), dtype=np.float32)
    expected[:4] = (0, 1, 0)
    np.testing.assert_allclose(raw(modality, "p.png", tmp_path), expected)
    np.testing.assert_allclose(raw(modality, "pa.tif", tmp_path), expected)
    expected = np.ones((8, 8, 3), dtype=np.float32)
    expected[:4] = (0, 0, 1)
    expected[4:, 4:] = 0.8
    np.testing.assert_allclose(raw(modality, "rgba.png", tmp_path), expected, atol=1 / 255)
    np.testing.assert_allclose(
        raw(modality, "la.png", tmp_path), np.full((8, 8, 3), 0.6), atol=1 / 255
    )
    grey = create_modality("image", ImageConfig(size=8, channels=1))
    np.testing.assert_allclose(raw(grey, "la.png", tmp_path), np.full((8, 8, 1), 0.6), atol=1 / 255)


def test_cmyk_and_exif_orientation(tmp_path: Path):
    cmyk = Image.new("CMYK", (8, 8), (255, 0, 0, 0))  # cyan
    cmyk.paste((0, 0, 0, 255), (0, 0, 8, 2))  # a black band on top
    cmyk.save(tmp_path / "cmyk.tif")
    expected = np.zeros((8, 8, 3), dtype=np.float32)
    expected[2:] = (0, 1, 1)
    modality = create_modality("image", ImageConfig(size=8))
    np.testing.assert_allclose(raw(modality, "cmyk.tif", tmp_path), expected)

    picture = Image.new("L", (8, 8), 0)
    picture.paste(255, (0, 0, 8, 2))  # white on top as stored
    exif = Image.Exif()
    exif[0x0112] = 3  # orientation: rotated 180 degrees
    picture.save(tmp_path / "turned.png", exif=exif)
    expected = np.zeros((8, 8, 1), dtype=np.float32)
    expected[6:] = 1  # white at the bottom as shown
    grey = create_modality("image", ImageConfig(size=8, channels=1))
    np.testing.assert_allclose(raw(grey, "turned.png", tmp_path), expected)


def test_an_image_over_max_pixels_is_refused_from_its_header(tmp_path: Path):
    (tmp_path / "big.png").write_bytes(png_header(9000, 9000))
    (tmp_path / "huge.png").write_bytes(png_header(20_000, 20_000))
    modality = create_modality("image", ImageConfig(size=8))
    tracemalloc.start()
    try:
        with pytest.raises(
            DataError,
            match=r"^column 'image': cannot read image big.png: 9000 x 9000 pixels, more "
            r"than the limit of 50000000 \(max_pixels\)$",
        ):
            modality.load({"image": "big.png"}, tmp_path)
        # beyond Pillow's own decompression-bomb guard (about 179 million pixels), its error
        with pytest.raises(DataError, match=r"^column 'image': cannot read image huge.png: .*bomb"):
            modality.load({"image": "huge.png"}, tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000  # the 243 MB and 1.2 GB of pixels were never held
    Image.new("RGB", (10, 10)).save(tmp_path / "small.png")
    strict = create_modality("image", ImageConfig(size=8, max_pixels=99))
    with pytest.raises(DataError, match=r"10 x 10 pixels, more than the limit of 99"):
        strict.load({"image": "small.png"}, tmp_path)


def test_truncated_and_corrupt_images_are_located_errors(tmp_path: Path):
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "whole.png")
    data = (tmp_path / "whole.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbled.png").write_bytes(data[:40] + bytes(len(data) - 40))
    (tmp_path / "header.png").write_bytes(data[:20])
    Image.fromarray(noise).save(tmp_path / "whole.jpg")
    jpeg = (tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    modality = create_modality("photo", ImageConfig(size=8))
    for name in ("cut.png", "garbled.png", "header.png", "cut.jpg"):
        with pytest.raises(DataError, match=rf"^column 'photo': cannot read (image )?'?{name}"):
            modality.load({"photo": name}, tmp_path)


# --- paths outside the dataset folder -------------------------------------------------------


def kinds_and_files(root: Path, outside: Path) -> dict[str, tuple[Modality, str]]:
    """A modality of each file-reading kind, and the name of a valid file for it, written both
    in `root` and in `outside`."""
    for folder in (root, outside):
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (9, 9, 9)).save(folder / "a.png")
        soundfile.write(folder / "a.wav", np.zeros(8000, dtype=np.float32), 8000)
        np.save(folder / "s.npy", np.zeros((5, 2), dtype=np.float32))
        np.save(folder / "v.npy", np.zeros(3, dtype=np.float32))
        (folder / "clip").mkdir(exist_ok=True)
        Image.new("RGB", (8, 8)).save(folder / "clip" / "0.png")
    return {
        "image": (create_modality("image", ImageConfig(size=8)), "a.png"),
        "audio": (create_modality("audio", AudioConfig(sample_rate=8000)), "a.wav"),
        "timeseries": (create_modality("timeseries", TimeSeriesConfig()), "s.npy"),
        "vector": (create_modality("vector", VectorConfig(dim=3)), "v.npy"),
        "video": (create_modality("video", VideoConfig(frames=2, size=8)), "clip"),
    }


@pytest.mark.parametrize("kind", ["image", "audio", "timeseries", "vector", "video"])
def test_no_kind_reads_outside_the_dataset_folder(tmp_path: Path, kind: str):
    root, outside = tmp_path / "data", tmp_path / "elsewhere"
    modality, name = kinds_and_files(root, outside)[kind]
    (root / "inside").mkdir()
    (root / "inside" / name).symlink_to(root / name)
    (root / "out").mkdir()
    (root / "out" / name).symlink_to(outside / name)
    assert modality.load({kind: name}, root) is not None
    assert modality.load({kind: str(root / name)}, root) is not None  # absolute, inside
    assert modality.load({kind: f"inside/{name}"}, root) is not None  # a symlink inside
    gone = f"../gone{Path(name).suffix}"
    leaving = [f"../elsewhere/{name}", str(outside / name), f"out/{name}", gone]
    for cell in leaving:
        with pytest.raises(
            DataError, match=rf"^column '{kind}': path leaves the dataset folder: {cell}$"
        ):
            modality.load({kind: cell}, root)
    modality.allow_outside_root = True  # data.allow_outside_root: trusted data
    for cell in leaving[:3]:
        assert modality.load({kind: cell}, root) is not None
    # a loose file the user names (omnifuse predict) is read wherever it lies
    trusting = kinds_and_files(root, outside)[kind][0]
    assert trusting.load({kind: LooseFile(outside / name)}, root) is not None


def test_a_frame_or_a_symlink_loop_cannot_leave_either(tmp_path: Path):
    root, outside = tmp_path / "data", tmp_path / "elsewhere"
    modality, _ = kinds_and_files(root, outside)["video"]
    (root / "mixed").mkdir()
    Image.new("RGB", (8, 8)).save(root / "mixed" / "0.png")
    (root / "mixed" / "1.png").symlink_to(outside / "a.png")
    with pytest.raises(DataError, match=r"^column 'video': path leaves the dataset folder: "):
        modality.load({"video": "mixed"}, root)
    (root / "loop.png").symlink_to(root / "loop.png")
    image = create_modality("image", ImageConfig(size=8))
    with pytest.raises(
        DataError, match=r"^column 'image': cannot resolve loop.png: RuntimeError: Symlink loop"
    ):
        image.load({"image": "loop.png"}, root)


def test_the_data_config_keeps_files_inside_the_root_by_default():
    assert DataConfig(manifest=Path("m.csv")).allow_outside_root is False
    assert DataConfig(manifest=Path("m.csv"), allow_outside_root=True).allow_outside_root


# --- audio read as far as the cut needs -----------------------------------------------------


def write_tone(path: Path, seconds: float, rate: int = 8000) -> None:
    t = np.arange(int(seconds * rate)) / rate
    samples = (np.sin(2 * np.pi * 440 * t) * 20000).astype("<i2")
    with wave.open(str(path), "wb") as file:
        file.setnchannels(1)
        file.setsampwidth(2)
        file.setframerate(rate)
        file.writeframes(samples.tobytes())


def test_a_long_wav_is_read_only_as_far_as_max_seconds(tmp_path: Path, monkeypatch):
    write_tone(tmp_path / "hour.wav", 600)  # 10 minutes, 9.6 MB
    write_tone(tmp_path / "short.wav", 2)
    config = AudioConfig(sample_rate=8000, max_seconds=1.0, features="waveform")
    modality = create_modality("voice", config)
    asked: list[int] = []
    read = soundfile.SoundFile.read

    def counting(self: soundfile.SoundFile, frames: int = -1, **kwargs: Any) -> Any:
        asked.append(frames)
        return read(self, frames, **kwargs)

    monkeypatch.setattr(soundfile.SoundFile, "read", counting)
    tracemalloc.start()
    try:
        long = modality.load({"voice": "hour.wav"}, tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert asked == [8000 + 160]  # a second and 20 ms, never the whole file (-1)
    assert peak < 1_000_000  # the whole file as float32 would be 19 MB
    torch.testing.assert_close(long, modality.load({"voice": "short.wav"}, tmp_path))
    assert long.shape == (8000,)


def test_corrupt_wavs_are_located_errors(tmp_path: Path):
    write_tone(tmp_path / "ok.wav", 1)
    data = (tmp_path / "ok.wav").read_bytes()
    (tmp_path / "fmt.wav").write_bytes(data[:20] + b"\xff" * 16 + data[36:])
    (tmp_path / "cut.wav").write_bytes(data[: len(data) // 2])
    (tmp_path / "header.wav").write_bytes(data[:30])
    modality = create_modality("voice", AudioConfig(sample_rate=8000))
    cases = {
        "fmt.wav": r"^column 'voice': cannot read audio fmt.wav",
        "cut.wav": r"^column 'voice': audio cut.wav is truncated",
        "header.wav": r"^column 'voice': cannot read audio header.wav",
    }
    for name, message in cases.items():
        with pytest.raises(DataError, match=message):
            modality.load({"voice": name}, tmp_path)


# --- huge cells -----------------------------------------------------------------------------


@pytest.mark.parametrize("tokenizer", ["bytes", "bpe"])
def test_a_huge_text_is_cut_to_max_chars_before_tokenising_and_counted(tokenizer: str):
    config = TextConfig(max_length=16, max_chars=1000, tokenizer=tokenizer)
    if tokenizer == "bpe":
        config = config.model_copy(update={"merges": [("a", "b")]})
    modality = create_modality("text", config)
    huge = "ab " * 350_000  # about 1 MB
    ids = modality.load({"text": huge}, Path())
    torch.testing.assert_close(ids, modality.load({"text": huge[:1000]}, Path()))
    assert len(ids) == 16
    assert modality.notes()["truncated"] == 2
    assert TextConfig().max_chars == 100_000


def test_a_loose_text_file_is_read_no_further_than_max_chars(tmp_path: Path):
    (tmp_path / "big.txt").write_text("x" * 1_000_000)
    (tmp_path / "latin.txt").write_bytes("café".encode("latin-1"))
    modality = create_modality("text", TextConfig(max_chars=100))
    assert modality.cell(tmp_path / "big.txt") == "x" * 101
    with pytest.raises(DataError, match=r"latin.txt: not UTF-8 text"):
        modality.cell(tmp_path / "latin.txt")


def test_a_vector_file_of_the_wrong_shape_is_refused_before_it_is_read(tmp_path: Path):
    np.save(tmp_path / "big.npy", np.zeros(2_000_000, dtype=np.float32))  # 8 MB
    modality = create_modality("emb", VectorConfig(dim=3))
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"vector of shape \(2000000,\), expected \(3,\)"):
            modality.load({"emb": "big.npy"}, tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000
    np.save(tmp_path / "row.npy", np.ones((1, 3), dtype=np.float32))
    torch.testing.assert_close(modality.load({"emb": "row.npy"}, tmp_path), torch.ones(3))
