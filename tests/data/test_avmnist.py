"""AV-MNIST from files: IDX reading, FSDD names and split, PCA energy removal, pairing, noise,
spectrograms, the built dataset, the registry, the command and the download, on tiny fixtures."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import json
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from click.testing import CliRunner
from PIL import Image

from omnifuse.cli import cli
from omnifuse.data.avmnist import (
    CLIP_SAMPLES,
    SPECTROGRAM_SIZE,
    add_noise,
    build_avmnist,
    fit_energy_removal,
    list_recordings,
    log_spectrogram,
    pair_recording,
    parse_recording,
    read_idx,
    sample_rng,
    write_idx,
)
from omnifuse.data.avmnist_download import download_fsdd, download_mnist
from omnifuse.errors import ConfigError, DataError
from omnifuse.registry import DATASETS, list_datasets

N_TRAIN, N_TEST = 48, 12


def digit_images(labels: np.ndarray, rng: np.random.Generator, size: int = 28) -> np.ndarray:
    """Blurry blobs whose position depends on the label, plus noise: low-rank enough that
    a few principal components carry most of the variance."""
    y, x = np.mgrid[:size, :size] * (28 / size)
    images = []
    for label in labels:
        cx, cy = 8 + 1.2 * label + rng.normal(0, 1), 10 + rng.normal(0, 2)
        blob = 200 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 30)
        images.append(np.clip(blob + rng.normal(0, 20, (size, size)), 0, 255))
    return np.array(images, dtype=np.uint8)


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Tiny MNIST (gzip IDX) and FSDD (10 digits x 2 speakers x takes 0, 1, 5, 6) folders."""
    root = tmp_path_factory.mktemp("sources")
    rng = np.random.default_rng(0)
    mnist = root / "mnist"
    mnist.mkdir()
    for prefix, n in (("train", N_TRAIN), ("t10k", N_TEST)):
        labels = np.arange(n, dtype=np.uint8) % 10
        write_idx(mnist / f"{prefix}-images-idx3-ubyte.gz", digit_images(labels, rng))
        write_idx(mnist / f"{prefix}-labels-idx1-ubyte.gz", labels)
    fsdd = root / "recordings"
    fsdd.mkdir()
    t = np.arange(3000) / 8000
    for digit in range(10):
        for speaker in ("ann", "bob"):
            for take in (0, 1, 5, 6):
                tone = 0.3 * np.sin(2 * np.pi * (300 + 100 * digit + 7 * take) * t)
                sf.write(fsdd / f"{digit}_{speaker}_{take}.wav", tone, 8000, subtype="PCM_16")
    return mnist, fsdd


@pytest.fixture(scope="module")
def built(sources: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    mnist, fsdd = sources
    return build_avmnist(
        tmp_path_factory.mktemp("built") / "avm", mnist=mnist, fsdd=fsdd, val_size=8
    ).parent


# --- IDX ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["x.idx", "x.idx.gz"])
def test_idx_round_trip(tmp_path: Path, name: str):
    images = np.random.default_rng(1).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / name, images)
    assert np.array_equal(read_idx(tmp_path / name), images)
    write_idx(tmp_path / name, np.arange(7, dtype=np.uint8))
    assert read_idx(tmp_path / name).tolist() == list(range(7))


def test_idx_bad_headers_are_one_line_errors(tmp_path: Path):
    path = tmp_path / "bad.idx"
    write_idx(path, np.zeros((3, 28, 28), dtype=np.uint8))
    raw = path.read_bytes()
    cases = {
        "magic number 1234": (1234).to_bytes(4, "big") + raw[4:],
        "the file holds": raw[:-10],  # truncated
        "truncated IDX header": raw[:10],
        "only 3 bytes": raw[:3],
    }
    for message, data in cases.items():
        path.write_bytes(data)
        with pytest.raises(DataError, match=message) as error:
            read_idx(path)
        assert "\n" not in str(error.value) and str(path) in str(error.value)
    path.write_bytes(b"\x1f\x8b" + b"not gzip at all")
    with pytest.raises(DataError, match="cannot read the IDX file"):
        read_idx(path)


# --- FSDD -----------------------------------------------------------------------------------


def test_fsdd_names_and_official_split(sources: tuple[Path, Path]):
    r = parse_recording("recordings/7_jackson_32.wav")
    assert (r.digit, r.speaker, r.take, r.split) == (7, "jackson", 32, "train")
    assert parse_recording("0_george_4.wav").split == "test"
    assert parse_recording("0_george_5.wav").split == "train"
    with pytest.raises(DataError, match="not an FSDD recording name"):
        parse_recording("seven_jackson_32.wav")
    recordings = list_recordings(sources[1])
    assert len(recordings) == 80
    assert {r.take for r in recordings if r.split == "test"} == {0, 1}


# --- images ---------------------------------------------------------------------------------


def test_pca_keeps_the_fewest_leading_components_that_hold_the_rest_of_the_energy():
    # 14x14 images keep the eigendecomposition small; the code does not depend on the size
    images = digit_images(np.arange(300) % 10, np.random.default_rng(2), size=14)
    removal = fit_energy_removal(images, 0.75)
    flat = images.reshape(300, -1).astype(np.float64)
    centred = flat - flat.mean(axis=0)
    kept = removal.apply(images).reshape(300, -1) - flat.mean(axis=0)
    removed = 1 - (kept**2).sum() / (centred**2).sum()
    assert 0 < removed <= 0.75
    assert removed == pytest.approx(removal.removed, abs=1e-9)
    # one fewer component would remove more than 75%
    fewer = removal.components[:-1]
    assert 1 - ((centred @ fewer.T) ** 2).sum() / (centred**2).sum() > 0.75
    # the kept part is a projection: applying it twice changes nothing
    twice = removal.apply(removal.apply(images))
    np.testing.assert_allclose(twice, removal.apply(images), atol=1e-9)
    np.testing.assert_allclose(fit_energy_removal(images, 0.0).apply(images), images, atol=1e-6)
    with pytest.raises(ConfigError, match="energy_removed"):
        fit_energy_removal(images, 1.0)


# --- audio ----------------------------------------------------------------------------------


@pytest.mark.parametrize("snr_db", [-10.0, 0.0, 6.0])
def test_noise_has_the_requested_snr_over_the_recording(snr_db: float):
    t = np.arange(4000) / 8000
    wave = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    clip, noisy = add_noise(wave, snr_db, np.random.default_rng(3))
    assert clip.shape == noisy.shape == (CLIP_SAMPLES,)
    speech = np.flatnonzero(clip)
    noise = (noisy - clip).astype(np.float64)
    measured = 10 * np.log10(np.mean(clip[speech] ** 2.0) / np.mean(noise**2))
    assert measured == pytest.approx(snr_db, abs=0.3)
    assert np.std(noise[: speech[0]]) > 0  # noise covers the padding too
    # fresh noise per draw
    other = add_noise(wave, snr_db, np.random.default_rng(4))[1]
    assert not np.allclose(noisy, other)


def test_long_recordings_are_centre_cropped():
    wave = np.arange(CLIP_SAMPLES + 100, dtype=np.float32)
    clip = add_noise(wave, 60.0, np.random.default_rng(0))[0]
    assert clip[0] == 50 and len(clip) == CLIP_SAMPLES


def test_spectrogram_is_112_by_112():
    clips = np.random.default_rng(5).normal(size=(3, CLIP_SAMPLES))
    spectra = log_spectrogram(clips)
    assert spectra.shape == (3, SPECTROGRAM_SIZE, SPECTROGRAM_SIZE)
    assert np.isfinite(spectra).all()


def test_pairing_is_by_digit_and_deterministic(sources: tuple[Path, Path]):
    pool: dict[int, list] = {}
    for r in list_recordings(sources[1]):
        pool.setdefault(r.digit, []).append(r)
    first = [pair_recording(i % 10, pool, sample_rng(0, "train", i)) for i in range(50)]
    again = [pair_recording(i % 10, pool, sample_rng(0, "train", i)) for i in range(50)]
    other = [pair_recording(i % 10, pool, sample_rng(1, "train", i)) for i in range(50)]
    assert all(r.digit == i % 10 for i, r in enumerate(first))
    assert first == again and first != other
    with pytest.raises(DataError, match="no FSDD recording of digit 3"):
        pair_recording(3, {}, sample_rng(0, "test", 0))


# --- the built dataset ----------------------------------------------------------------------


def test_built_dataset(built: Path, sources: tuple[Path, Path]):
    rows = pq.read_table(built / "manifest.parquet").to_pylist()
    assert list(rows[0]) == ["id", "split", "image", "audio", "label", "recording", "speaker"]
    splits = [r["split"] for r in rows]
    assert splits.count("train") == N_TRAIN - 8 and splits.count("val") == 8
    assert splits.count("test") == N_TEST
    for row in rows:
        recording = parse_recording(row["recording"])
        assert recording.digit == row["label"]
        assert recording.split == ("test" if row["split"] == "test" else "train")
    image = np.asarray(Image.open(built / rows[0]["image"]))
    audio = np.asarray(Image.open(built / rows[0]["audio"]))
    assert image.shape == (28, 28) and image.dtype == np.uint8
    assert audio.shape == (SPECTROGRAM_SIZE, SPECTROGRAM_SIZE) and audio.dtype == np.uint8
    meta = json.loads((built / "meta.json").read_text())
    assert meta["splits"] == {"train": N_TRAIN - 8, "val": 8, "test": N_TEST}
    assert 0 < meta["image"]["energy_removed"] <= 0.75
    assert meta["sources"]["fsdd"]["recordings"] == 80
    assert not list(built.parent.glob(".*partial"))


def test_same_seed_same_files_and_samples_do_not_depend_on_sizes(
    built: Path, sources: tuple[Path, Path], tmp_path: Path
):
    mnist, fsdd = sources
    smaller = build_avmnist(
        tmp_path / "small", mnist=mnist, fsdd=fsdd, train_size=20, val_size=8, test_size=5
    ).parent
    big = {r["id"]: r for r in pq.read_table(built / "manifest.parquet").to_pylist()}
    for row in pq.read_table(smaller / "manifest.parquet").to_pylist():
        assert row["recording"] == big[row["id"]]["recording"]
    # the noise too: the same spectrogram, up to the uint8 range fitted on each training split
    spectra = [decoded(root, "mnist-test-00003") for root in (smaller, built)]
    assert np.corrcoef(spectra[0].ravel(), spectra[1].ravel())[0, 1] > 0.99
    with pytest.raises(DataError, match="already exists"):
        build_avmnist(smaller, mnist=mnist, fsdd=fsdd)
    with pytest.raises(ConfigError, match="val_size"):
        build_avmnist(tmp_path / "x", mnist=mnist, fsdd=fsdd, train_size=5, val_size=5)


def decoded(root: Path, sample_id: str) -> np.ndarray:
    """A spectrogram PNG back in log-magnitude units, with the range in meta.json."""
    audio = json.loads((root / "meta.json").read_text())["audio"]
    pixels = np.asarray(Image.open(root / "audio" / f"{sample_id}.png"), dtype=float)
    return audio["low"] + pixels / 255 * (audio["high"] - audio["low"])


def test_registered_and_built_once_through_a_config(
    sources: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from omnifuse.config import DataConfig
    from omnifuse.data.dataset import resolve_manifest

    assert "avmnist" in list_datasets()
    assert {"mnist", "fsdd", "snr_db", "train_size"} <= set(DATASETS.options("avmnist"))
    monkeypatch.setenv("OMNIFUSE_CACHE", str(tmp_path))
    options = {"mnist": str(sources[0]), "fsdd": str(sources[1]), "train_size": 12}
    data = DataConfig.model_validate({"dataset": {"type": "avmnist", **options, "test_size": 4}})
    manifest = resolve_manifest(data)
    assert manifest.name == "manifest.parquet" and manifest.parent.name.startswith("avmnist-")
    assert resolve_manifest(data) == manifest  # cached
    # a new version of the dataset's builder is built afresh, not read from the old cache
    monkeypatch.setitem(DATASETS.info("avmnist"), "version", DATASETS.version("avmnist") + 1)
    rebuilt = resolve_manifest(data)
    assert rebuilt != manifest and rebuilt.parent.name.startswith("avmnist-")


def test_missing_sources_are_one_line_errors(sources: tuple[Path, Path], tmp_path: Path):
    with pytest.raises(DataError, match=r"no train-images-idx3-ubyte\.gz"):
        build_avmnist(tmp_path / "a", mnist=tmp_path, fsdd=sources[1])
    with pytest.raises(DataError, match="no such folder"):
        build_avmnist(tmp_path / "a", mnist=sources[0], fsdd=tmp_path / "nope")


def test_command(sources: tuple[Path, Path], tmp_path: Path):
    mnist, fsdd = sources
    args = ["--mnist", mnist, "--fsdd", fsdd, "--train-size", "10", "--test-size", "3"]
    result = CliRunner().invoke(
        cli, [str(a) for a in ["data", "avmnist", "--out", tmp_path / "o", *args]]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.splitlines()[-1])["splits"] == {
        "train": 9,
        "val": 1,
        "test": 3,
    }
    again = CliRunner().invoke(
        cli, [str(a) for a in ["data", "avmnist", "--out", tmp_path / "o", *args]]
    )
    assert again.exit_code == 1 and "already exists" in again.output


# --- download -------------------------------------------------------------------------------


@pytest.fixture()
def server(tmp_path: Path, sources: tuple[Path, Path]) -> Iterator[str]:
    """An HTTP server on localhost serving the MNIST files and an FSDD-like zip archive."""
    served = tmp_path / "served"
    (served / "mnist").mkdir(parents=True)
    for file in sources[0].iterdir():
        (served / "mnist" / file.name).write_bytes(file.read_bytes())
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("free-spoken-digit-dataset-master/README.md", "fsdd")
        for wav in sorted(sources[1].glob("*.wav"))[:20]:
            archive.write(wav, f"free-spoken-digit-dataset-master/recordings/{wav.name}")
    (served / "master.zip").write_bytes(buffer.getvalue())
    handler = functools.partial(QuietHandler, directory=str(served))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def test_download(server: str, sources: tuple[Path, Path], tmp_path: Path):
    md5 = {f.name: hashlib.md5(f.read_bytes()).hexdigest() for f in sources[0].iterdir()}
    files = download_mnist(tmp_path / "mnist", url=f"{server}/mnist/", checksums=md5)
    assert len(files) == 4 and not list((tmp_path / "mnist").glob(".*"))
    assert np.array_equal(read_idx(files["test_labels"]), np.arange(N_TEST) % 10)
    recordings = download_fsdd(tmp_path / "fsdd", url=f"{server}/master.zip")
    assert len(recordings) == 20 and sorted((tmp_path / "fsdd").iterdir())[0].suffix == ".wav"
    # present files are kept, not fetched again (the server is not asked)
    assert len(download_fsdd(tmp_path / "fsdd", url="http://127.0.0.1:9/none.zip")) == 20
    wrong = dict.fromkeys(md5, "0" * 32)
    with pytest.raises(DataError, match="checksum mismatch"):
        download_mnist(tmp_path / "other", url=f"{server}/mnist/", checksums=wrong)


def test_download_offline_is_one_line(tmp_path: Path):
    # port 9 (discard) on localhost: connection refused, like a machine without internet
    with pytest.raises(DataError, match=r"cannot download http://127\.0\.0\.1:9/") as error:
        download_mnist(tmp_path, url="http://127.0.0.1:9/")
    assert "\n" not in str(error.value)
    with pytest.raises(DataError, match="cannot download"):
        download_fsdd(tmp_path / "f", url=(tmp_path / "missing.zip").as_uri())
