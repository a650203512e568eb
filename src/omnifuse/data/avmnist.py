"""AV-MNIST from real files: MNIST digits paired with spoken digits, as in MFAS and MultiBench.

Each sample is an MNIST image with about 75% of its PCA energy removed (only the leading
components kept; the PCA fitted on the training images only) and a 112x112 log-magnitude
spectrogram of a Free Spoken Digit Dataset recording of the same digit, drowned in white
noise at `snr_db` (fresh for each sample).
docs/avmnist.md gives every choice and where it differs from MultiBench.

    manifest = build_avmnist("avmnist", mnist="data/mnist", fsdd="data/fsdd/recordings")

`omnifuse.data.avmnist_download` fetches the sources from their canonical addresses.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf
import torch
from PIL import Image
from tqdm import tqdm

from omnifuse.errors import ConfigError, DataError
from omnifuse.registry import register_dataset

VERSION = 2  # in meta.json and the cache key: bump when the same options build another set
SAMPLE_RATE = 8000  # FSDD's rate; recordings are never resampled
SPECTROGRAM_SIZE = 112  # frequency bins x frames, as MFAS and MultiBench
N_FFT = 2 * (SPECTROGRAM_SIZE - 1)  # 222: n_fft // 2 + 1 = 112 bins from 0 to 4 kHz
HOP = 72  # 9 ms
CLIP_SAMPLES = N_FFT + HOP * (SPECTROGRAM_SIZE - 1)  # 8214 (1.03 s): exactly 112 frames
ENERGY_REMOVED = 0.75
SNR_DB = -10.0
VAL_FRACTION = 1 / 12  # 5000 of MNIST's 60000 training images, MultiBench's split
TEST_TAKES = range(5)  # FSDD's official split: takes 0-4 test, 5-49 train
IMAGE_SIZE = 28

_MNIST_PARTS = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_IDX_MAGIC = {2049: 1, 2051: 3}  # labels: 1 dimension; images: 3 (count, rows, cols)
_FSDD_NAME = re.compile(r"^(\d)_([A-Za-z0-9-]+)_(\d+)\.wav$")
_SPLIT_CODE = {"train": 0, "test": 1}  # MNIST's own splits, in each sample's seed
_SCALE_SAMPLE = 500  # training spectrograms the uint8 range is fitted on
_CHUNK = 256  # samples per batched STFT

_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("split", pa.string()),
        ("image", pa.string()),
        ("audio", pa.string()),
        ("label", pa.int64()),
        ("recording", pa.string()),
        ("speaker", pa.string()),
    ]
)


# --- MNIST IDX files ------------------------------------------------------------------------


def read_idx(path: Path | str) -> np.ndarray:
    """An IDX file (gzip or raw) of unsigned bytes: (n,) labels or (n, rows, cols) images."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        raise DataError(f"{path}: cannot read the IDX file: {error}") from None
    if len(raw) < 8:
        raise DataError(f"{path}: not an IDX file (only {len(raw)} bytes)")
    magic = int.from_bytes(raw[:4], "big")
    if magic not in _IDX_MAGIC:
        raise DataError(
            f"{path}: not an MNIST IDX file (magic number {magic}, expected 2049 or 2051)"
        )
    dims = _IDX_MAGIC[magic]
    header = 4 + 4 * dims
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header ({len(raw)} bytes)")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    expected = header + int(np.prod(shape))
    if len(raw) != expected:
        raise DataError(
            f"{path}: the header declares shape {shape} ({expected} bytes), "
            f"the file holds {len(raw)} bytes"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def write_idx(path: Path | str, array: np.ndarray) -> None:
    """Write (n,) labels or (n, rows, cols) images as unsigned bytes; gzip if `path` ends .gz."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    magic = {1: 2049, 3: 2051}.get(array.ndim)
    if magic is None:
        raise ValueError(f"IDX arrays are 1-d or 3-d, got {array.ndim} dimensions")
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    data = header + array.tobytes()
    Path(path).write_bytes(gzip.compress(data, mtime=0) if str(path).endswith(".gz") else data)


@dataclass(frozen=True)
class Mnist:
    train_images: np.ndarray  # (n, 28, 28) uint8
    train_labels: np.ndarray  # (n,) uint8
    test_images: np.ndarray
    test_labels: np.ndarray
    files: dict[str, Path]


def mnist_files(directory: Path | str) -> dict[str, Path]:
    """The four MNIST files in `directory`, gzip (`.gz`) or raw, by part name."""
    directory = Path(directory)
    found = {}
    for part, stem in _MNIST_PARTS.items():
        candidates = [directory / f"{stem}.gz", directory / stem]
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            raise DataError(
                f"{directory}: no {stem}.gz (MNIST); download it with "
                "`omnifuse data avmnist --download`"
            )
        found[part] = path
    return found


def load_mnist(directory: Path | str) -> Mnist:
    """The MNIST images and labels, checked for matching counts, 28x28 images, digits 0-9."""
    files = mnist_files(directory)
    arrays = {part: read_idx(path) for part, path in files.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
            raise DataError(f"{files[f'{split}_images']}: expected 28x28 images")
        if labels.ndim != 1:
            raise DataError(f"{files[f'{split}_labels']}: expected labels (a 1-d IDX file)")
        if len(images) != len(labels):
            raise DataError(
                f"{files[f'{split}_images']}: {len(images)} images but "
                f"{files[f'{split}_labels'].name} has {len(labels)} labels"
            )
        if labels.size and labels.max() > 9:
            raise DataError(f"{files[f'{split}_labels']}: a label above 9 ({labels.max()})")
    return Mnist(**arrays, files=files)


# --- FSDD recordings ------------------------------------------------------------------------


@dataclass(frozen=True)
class Recording:
    """One FSDD file, `{digit}_{speaker}_{take}.wav`; takes 0-4 are the official test set."""

    path: Path
    digit: int
    speaker: str
    take: int

    @property
    def split(self) -> str:
        return "test" if self.take in TEST_TAKES else "train"


def parse_recording(path: Path | str) -> Recording:
    """The digit, speaker and take of an FSDD file name; DataError for any other name."""
    path = Path(path)
    match = _FSDD_NAME.match(path.name)
    if match is None:
        raise DataError(f"{path}: not an FSDD recording name ({{digit}}_{{speaker}}_{{take}}.wav)")
    return Recording(path, int(match[1]), match[2], int(match[3]))


def list_recordings(directory: Path | str) -> list[Recording]:
    """Every `.wav` in `directory`, sorted by digit, speaker and take."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"{directory}: no such folder (FSDD recordings)")
    recordings = [parse_recording(p) for p in directory.glob("*.wav")]
    if not recordings:
        raise DataError(
            f"{directory}: no .wav files (FSDD recordings); download them with "
            "`omnifuse data avmnist --download`"
        )
    return sorted(recordings, key=lambda r: (r.digit, r.speaker, r.take))


def read_recording(path: Path) -> np.ndarray:
    """The recording as mono float32 in [-1, 1]; it must be 8 kHz."""
    try:
        wave, rate = sf.read(path, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as error:
        raise DataError(f"{path}: cannot read the recording: {error}") from None
    if rate != SAMPLE_RATE:
        raise DataError(f"{path}: sample rate {rate} Hz, FSDD recordings are {SAMPLE_RATE} Hz")
    if wave.shape[0] == 0 or not np.any(wave):
        raise DataError(f"{path}: the recording is empty or silent")
    return wave.mean(axis=1)


# --- images: PCA energy removal -------------------------------------------------------------


@dataclass(frozen=True)
class EnergyRemoval:
    """PCA fitted on training images: only the leading principal axes `components` (k, 784)
    are kept; the trailing ones, `removed` (at most the requested fraction) of the variance, go."""

    mean: np.ndarray  # (784,)
    components: np.ndarray  # (k, 784), orthonormal rows
    removed: float

    def apply(self, images: np.ndarray) -> np.ndarray:
        """(n, 28, 28) images projected on the kept components: mean + U Uᵀ (x - mean)."""
        x = images.reshape(len(images), -1).astype(np.float64) - self.mean
        return (self.mean + (x @ self.components.T) @ self.components).reshape(images.shape)


def fit_energy_removal(images: np.ndarray, fraction: float = ENERGY_REMOVED) -> EnergyRemoval:
    """The fewest leading principal components whose variance reaches `1 - fraction` of the
    total variance of `images` (an eigendecomposition of their 784x784 covariance)."""
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"avmnist: energy_removed must be in [0, 1), got {fraction}")
    x = images.reshape(len(images), -1).astype(np.float64)
    mean = x.mean(axis=0)
    x -= mean
    values, vectors = np.linalg.eigh(x.T @ x / max(len(x) - 1, 1))
    values, vectors = values[::-1].clip(min=0.0), vectors[:, ::-1]  # descending
    share = np.cumsum(values) / values.sum()
    k = min(int(np.searchsorted(share, 1.0 - fraction - 1e-12)) + 1, len(share))
    return EnergyRemoval(mean, np.ascontiguousarray(vectors[:, :k].T), 1.0 - float(share[k - 1]))


# --- audio: noise and spectrogram -----------------------------------------------------------


def fit_clip(wave: np.ndarray) -> tuple[np.ndarray, slice]:
    """The recording centred in CLIP_SAMPLES samples (zero-padded or centre-cropped), and
    where the recording lies in the clip."""
    if len(wave) >= CLIP_SAMPLES:
        start = (len(wave) - CLIP_SAMPLES) // 2
        return wave[start : start + CLIP_SAMPLES].astype(np.float32), slice(0, CLIP_SAMPLES)
    start = (CLIP_SAMPLES - len(wave)) // 2
    clip = np.zeros(CLIP_SAMPLES, dtype=np.float32)
    clip[start : start + len(wave)] = wave
    return clip, slice(start, start + len(wave))


def add_noise(
    wave: np.ndarray, snr_db: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(clip, noisy clip): the recording fitted to the clip, and the same with white Gaussian
    noise over the whole clip whose power is the recording's power (over its own samples)
    divided by 10**(snr_db / 10)."""
    clip, speech = fit_clip(wave)
    power = float(np.mean(clip[speech].astype(np.float64) ** 2))
    sigma = np.sqrt(power / 10 ** (snr_db / 10))
    noise = rng.normal(0.0, sigma, size=CLIP_SAMPLES)
    return clip, (clip + noise).astype(np.float32)


def log_spectrogram(clips: np.ndarray) -> np.ndarray:
    """(n, CLIP_SAMPLES) -> (n, 112 bins, 112 frames) natural-log STFT magnitude, each clip
    first scaled to unit RMS (Hann window of 222 samples, hop 72, no centring)."""
    x = torch.from_numpy(np.asarray(clips, dtype=np.float32))
    x = x / x.pow(2).mean(dim=1, keepdim=True).sqrt().clamp(min=1e-8)
    spec = torch.stft(
        x, N_FFT, HOP, window=torch.hann_window(N_FFT), center=False, return_complex=True
    )  # (n, 112, 112)
    return torch.log(spec.abs() + 1e-4).numpy()


def to_uint8(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """`values` mapped linearly from [low, high] to [0, 255], clipped and rounded."""
    scaled = (values - low) * (255.0 / (high - low))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


# --- pairing --------------------------------------------------------------------------------


def sample_rng(seed: int, mnist_split: str, index: int) -> np.random.Generator:
    """The generator of one sample (its recording and its noise): a function of the seed and
    the MNIST image only, so a sample is the same whatever sizes are built."""
    return np.random.default_rng([seed, _SPLIT_CODE[mnist_split], index])


def pair_recording(
    label: int, pool: Mapping[int, Sequence[Recording]], rng: np.random.Generator
) -> Recording:
    """A recording of digit `label`, drawn uniformly from `pool` (recordings by digit)."""
    choices = pool.get(label, ())
    if not choices:
        raise DataError(f"avmnist: no FSDD recording of digit {label} in this split")
    return choices[int(rng.integers(len(choices)))]


# --- the dataset ----------------------------------------------------------------------------


@register_dataset("avmnist", version=VERSION)
def build_avmnist(
    out: Path | str,
    progress: bool = False,
    *,
    mnist: Path | str,
    fsdd: Path | str,
    seed: int = 0,
    snr_db: float = SNR_DB,
    energy_removed: float = ENERGY_REMOVED,
    train_size: int | None = None,
    val_size: int | None = None,
    test_size: int | None = None,
) -> Path:
    """Write AV-MNIST under `out` and return its manifest (out / "manifest.parquet").

    `train_size`: how many MNIST training images (the first, in file order) to use, val
    included; `val_size`: how many of them (the last) form the validation split, default
    1/12 (5000 of 60000); `test_size`: the first MNIST test images to use.
    """
    out = Path(out)
    if out.exists():
        raise DataError(f"avmnist: {out} already exists")
    data = load_mnist(mnist)
    recordings = list_recordings(fsdd)
    n_train = _size(train_size, len(data.train_images), "train_size")
    n_test = _size(test_size, len(data.test_images), "test_size")
    n_val = round(n_train * VAL_FRACTION) if val_size is None else val_size
    if not 0 <= n_val < n_train:
        raise ConfigError(f"avmnist: val_size must be in [0, train_size), got {n_val} of {n_train}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    options = {
        "seed": seed,
        "snr_db": snr_db,
        "energy_removed": energy_removed,
        "train_size": n_train,
        "val_size": n_val,
        "test_size": n_test,
    }
    try:
        _write(tmp, data, recordings, options, progress=progress)
        tmp.chmod(0o755)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out / "manifest.parquet"


def _size(value: int | None, available: int, name: str) -> int:
    if value is None:
        return available
    if not 1 <= value <= available:
        raise ConfigError(f"avmnist: {name} must be in [1, {available}], got {value}")
    return value


@dataclass(frozen=True)
class _Sample:
    id: str
    split: str
    mnist_split: str  # the MNIST file it comes from: train (train and val) or test
    index: int  # in that file


def _write(
    root: Path,
    data: Mnist,
    recordings: list[Recording],
    options: dict[str, int | float],
    *,
    progress: bool,
) -> None:
    """The dataset's files under `root`: images/, audio/, manifest.parquet and meta.json."""
    started = time.perf_counter()
    n_train, n_val, n_test = (int(options[k]) for k in ("train_size", "val_size", "test_size"))
    samples = [
        _Sample(f"mnist-train-{i:05d}", "train" if i < n_train - n_val else "val", "train", i)
        for i in range(n_train)
    ] + [_Sample(f"mnist-test-{i:05d}", "test", "test", i) for i in range(n_test)]
    (root / "images").mkdir()
    (root / "audio").mkdir()
    removal, image_range = _write_images(
        root,
        data,
        samples,
        fit_on=n_train - n_val,
        energy_removed=float(options["energy_removed"]),
        progress=progress,
    )
    rows, audio_range = _write_audio(
        root,
        data,
        recordings,
        samples,
        seed=int(options["seed"]),
        snr_db=float(options["snr_db"]),
        progress=progress,
    )
    pq.write_table(pa.Table.from_pylist(rows, schema=_SCHEMA), root / "manifest.parquet")
    counts = {split: sum(s.split == split for s in samples) for split in ("train", "val", "test")}
    meta = _meta(data, recordings, options, counts, removal, image_range, audio_range)
    meta["seconds"] = round(time.perf_counter() - started, 1)
    (root / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


def _write_images(
    root: Path,
    data: Mnist,
    samples: list[_Sample],
    *,
    fit_on: int,
    energy_removed: float,
    progress: bool,
) -> tuple[EnergyRemoval, tuple[float, float]]:
    """Each sample's image, its PCA energy removed, as images/{id}.png; returns the removal
    and the (low, high) range mapped to uint8. The PCA and the range are fitted on the first
    `fit_on` MNIST training images: the training split only (val and test excluded)."""
    removal = fit_energy_removal(data.train_images[:fit_on], energy_removed)
    fitted = removal.apply(data.train_images[:fit_on])
    # the uint8 range: the 0.1th and 99.9th percentiles of the training projections
    low, high = (float(v) for v in np.percentile(fitted, [0.1, 99.9]))
    images = {"train": data.train_images, "test": data.test_images}
    for chunk in _chunks(samples, progress, "avmnist images"):
        batch = np.stack([images[s.mnist_split][s.index] for s in chunk])
        for s, projected in zip(chunk, removal.apply(batch), strict=True):
            pixels = to_uint8(projected, low, high)
            Image.fromarray(pixels).save(root / "images" / f"{s.id}.png")
    return removal, (low, high)


def _write_audio(
    root: Path,
    data: Mnist,
    recordings: list[Recording],
    samples: list[_Sample],
    *,
    seed: int,
    snr_db: float,
    progress: bool,
) -> tuple[list[dict[str, str | int]], tuple[float, float]]:
    """Each sample's noisy spectrogram as audio/{id}.png; returns the manifest rows and the
    (low, high) range mapped to uint8."""
    labels = {"train": data.train_labels, "test": data.test_labels}
    # every recording read once; each sample draws its recording and its noise
    waves = {r.path.name: read_recording(r.path) for r in recordings}
    pools: dict[str, dict[int, list[Recording]]] = {"train": {}, "test": {}}
    for r in recordings:
        pools[r.split].setdefault(r.digit, []).append(r)

    def spectrograms(chunk: Sequence[_Sample]) -> tuple[np.ndarray, list[Recording]]:
        """The chunk's log spectrograms and the recording each sample drew."""
        clips, chosen = [], []
        for s in chunk:
            rng = sample_rng(seed, s.mnist_split, s.index)
            label = int(labels[s.mnist_split][s.index])
            recording = pair_recording(label, pools[s.mnist_split], rng)
            clips.append(add_noise(waves[recording.path.name], snr_db, rng)[1])
            chosen.append(recording)
        return log_spectrogram(np.stack(clips)), chosen

    # the uint8 range: the 0.1th and 99.9th percentiles of the first training spectrograms
    head = [s for s in samples if s.split == "train"][:_SCALE_SAMPLE]
    low, high = (float(v) for v in np.percentile(spectrograms(head)[0], [0.1, 99.9]))
    rows: list[dict[str, str | int]] = []
    for chunk in _chunks(samples, progress, "avmnist audio"):
        spectra, chosen = spectrograms(chunk)
        for s, spectrum, recording in zip(chunk, spectra, chosen, strict=True):
            # frequency upwards, as a spectrogram is usually drawn
            pixels = to_uint8(spectrum[::-1], low, high)
            Image.fromarray(np.ascontiguousarray(pixels)).save(root / "audio" / f"{s.id}.png")
            rows.append(
                {
                    "id": s.id,
                    "split": s.split,
                    "image": f"images/{s.id}.png",
                    "audio": f"audio/{s.id}.png",
                    "label": int(labels[s.mnist_split][s.index]),
                    "recording": recording.path.name,
                    "speaker": recording.speaker,
                }
            )
    return rows, (low, high)


def _meta(
    data: Mnist,
    recordings: list[Recording],
    options: dict[str, int | float],
    counts: dict[str, int],
    removal: EnergyRemoval,
    image_range: tuple[float, float],
    audio_range: tuple[float, float],
) -> dict[str, object]:
    """meta.json (without `seconds`): the options, the split sizes, the sources' checksums
    and how the PNGs encode the image projections and the spectrograms."""
    return {
        "dataset": "avmnist",
        "version": VERSION,
        "options": options,
        "splits": counts,
        "sources": {
            "mnist": {
                "folder": str(Path(data.files["train_images"]).parent.resolve()),
                "sha256": {p.name: _sha256([p]) for p in data.files.values()},
            },
            "fsdd": {
                "folder": str(recordings[0].path.parent.resolve()),
                "recordings": len(recordings),
                "sha256_of_all": _sha256(r.path for r in recordings),
            },
        },
        "image": {
            "pca_components_kept": len(removal.components),
            "energy_removed": round(removal.removed, 6),
            "fitted_on": counts["train"],
            "png": "uint8 = clip(round(255 * (projection - low) / (high - low))), "
            "projection = mean + U Uᵀ (x - mean) in raw pixel units",
            "low": image_range[0],
            "high": image_range[1],
        },
        "audio": {
            "sample_rate": SAMPLE_RATE,
            "clip_samples": CLIP_SAMPLES,
            "n_fft": N_FFT,
            "hop": HOP,
            "window": "hann",
            "png": "rows are frequency bins, 4 kHz at the top; uint8 = "
            "clip(round(255 * (log|STFT| - low) / (high - low)))",
            "low": audio_range[0],
            "high": audio_range[1],
        },
    }


def _chunks(samples: list[_Sample], progress: bool, desc: str) -> Iterator[list[_Sample]]:
    """`samples` in chunks of _CHUNK, with a progress bar."""
    with tqdm(total=len(samples), desc=desc, unit="sample", disable=not progress) as bar:
        for start in range(0, len(samples), _CHUNK):
            chunk = samples[start : start + _CHUNK]
            yield chunk
            bar.update(len(chunk))


def _sha256(paths: Iterable[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()
