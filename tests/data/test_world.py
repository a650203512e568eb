"""The generated world: determinism, file formats, missing cells and the documented dependencies.

Dependencies are measured from the written PNG, WAV and Parquet files with plain numpy.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from PIL import Image

from omnifuse.data.world import (
    IMAGE_SIZE,
    NUM_SCENE_CLASSES,
    SAMPLE_RATE,
    SCENE_CLASS_NAMES,
    SHAPES,
    VERSION,
    generate_world,
)
from omnifuse.errors import DataError

N = 200
TABULAR = ("venue", "temperature", "humidity", "operator")
NULLABLE = ("image", "audio", "caption", *TABULAR)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("world") / "w"
    generate_world(out, n=N, seed=0)
    return out


@pytest.fixture(scope="module")
def rows(root: Path) -> dict[str, list]:
    return read(root / "manifest.parquet")


@pytest.fixture(scope="module")
def images(root: Path, rows: dict[str, list]) -> dict[int, np.ndarray]:
    """Present images as float arrays, by row index."""
    return {
        i: np.asarray(Image.open(root / p), dtype=float) for i, p in enumerate(rows["image"]) if p
    }


@pytest.fixture(scope="module")
def clips(root: Path, rows: dict[str, list]) -> dict[int, np.ndarray]:
    """Present audio clips as float arrays, by row index."""
    return {i: sf.read(root / p)[0] for i, p in enumerate(rows["audio"]) if p}


def read(manifest: Path) -> dict[str, list]:
    """Manifest columns as lists, with NaN as None so that equal contents compare equal."""
    columns = pq.read_table(manifest).to_pydict()
    return {k: [None if v != v else v for v in values] for k, values in columns.items()}


def column(rows: dict[str, list], name: str, index: list[int]) -> np.ndarray:
    return np.array([rows[name][i] for i in index])


# --- measures from the files ----------------------------------------------------------------


def frame(image: np.ndarray) -> list[np.ndarray]:
    """The grey values of the four 1-pixel image edges, which objects never touch."""
    grey = image.mean(axis=2)
    return [grey[0], grey[-1], grey[:, 0], grey[:, -1]]


def brightness(image: np.ndarray) -> float:
    return float(np.mean(np.concatenate(frame(image))))


def stripiness(image: np.ndarray) -> float:
    """Mean variance along the edges: diagonal stripes make every edge alternate."""
    return float(np.mean([edge.var() for edge in frame(image)]))


def object_area(image: np.ndarray) -> int:
    """Pixels of saturated colour: objects are strongly coloured, backgrounds nearly grey."""
    return int(np.count_nonzero(image.max(axis=2) - image.min(axis=2) > 60))


def hum_energy(clip: np.ndarray) -> float:
    """Spectral magnitude around 100 Hz (1 Hz bins for a 1 s clip)."""
    return float(np.abs(np.fft.rfft(clip))[97:104].sum())


def separation(measure: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(largest measure among label 0, smallest among label 1)."""
    return float(measure[labels == 0].max()), float(measure[labels == 1].min())


# --- determinism ----------------------------------------------------------------------------


def test_same_seed_gives_identical_files(root: Path, rows: dict[str, list], tmp_path: Path) -> None:
    assert read(generate_world(tmp_path / "again", n=N, seed=0)) == rows
    names = ["manifest.parquet", "world.json"] + [
        p for p in rows["image"][:5] + rows["audio"][:5] if p
    ]
    assert len(names) >= 10
    for name in names:
        assert (tmp_path / "again" / name).read_bytes() == (root / name).read_bytes()


def test_different_seed_differs(rows: dict[str, list], tmp_path: Path) -> None:
    other = read(generate_world(tmp_path / "other", n=20, seed=1))
    assert other["caption"] != rows["caption"][:20]
    assert other["score"] != rows["score"][:20]


def test_sample_does_not_depend_on_n(tmp_path: Path) -> None:
    short = read(generate_world(tmp_path / "short", n=20, seed=7))
    long = read(generate_world(tmp_path / "long", n=40, seed=7))
    assert {k: v[:20] for k, v in long.items()} == short
    for name in [p for p in short["image"] + short["audio"] if p]:
        assert (tmp_path / "short" / name).read_bytes() == (tmp_path / "long" / name).read_bytes()


# --- files and manifest ---------------------------------------------------------------------


def test_images_are_64x64_rgb_png(root: Path, rows: dict[str, list]) -> None:
    for path in filter(None, rows["image"]):
        with Image.open(root / path) as image:
            assert (image.format, image.mode, image.size) == ("PNG", "RGB", (64, 64))
    assert IMAGE_SIZE == 64


def test_audio_is_one_second_16khz_mono_pcm16(root: Path, rows: dict[str, list]) -> None:
    for path in filter(None, rows["audio"]):
        info = sf.info(root / path)
        assert (info.samplerate, info.channels, info.frames) == (SAMPLE_RATE, 1, 16000)
        assert info.subtype == "PCM_16"


def test_audio_never_clips(clips: dict[int, np.ndarray]) -> None:
    assert max(float(np.abs(clip).max()) for clip in clips.values()) < 0.9


def test_manifest_schema(root: Path, rows: dict[str, list]) -> None:
    schema = pq.read_schema(root / "manifest.parquet")
    ints = ("scene_class", "synergy", *(n for n in schema.names if n.startswith("latent_")))
    floats = ("temperature", "humidity", "score")
    for field in schema:
        expected = pa.int64() if field.name in ints else pa.string()
        expected = pa.float64() if field.name in floats else expected
        assert field.type == expected, field.name
    assert schema.names[:14] == [
        "id", "split", "image", "audio", "caption", "question", "answer",
        "venue", "temperature", "humidity", "operator", "scene_class", "synergy", "score",
    ]  # fmt: skip
    assert [n for n in schema.names if n.startswith("latent_")] == [
        "latent_n_objects", "latent_light", "latent_pattern", "latent_hum", "latent_venue",
        "latent_area",
    ]  # fmt: skip
    assert rows["id"] == [f"{i:06d}" for i in range(N)]
    present = [p for p in rows["image"] if p]
    assert present == [f"images/{i:06d}.png" for i, p in enumerate(rows["image"]) if p]
    assert sorted(p.name for p in (root / "images").iterdir()) == sorted(
        Path(p).name for p in present
    )
    assert len(list((root / "audio").iterdir())) == sum(p is not None for p in rows["audio"])


def test_world_json(root: Path) -> None:
    info = json.loads((root / "world.json").read_text())
    assert info["generator"] == "world"
    assert (info["version"], info["n"], info["seed"], info["missing"]) == (VERSION, N, 0, 0.05)
    assert info["classes"]["scene_class"] == list(SCENE_CLASS_NAMES)
    assert len(SCENE_CLASS_NAMES) == NUM_SCENE_CLASSES == 12
    assert SCENE_CLASS_NAMES[0] == "1 object, dark, harbour"


def test_split_is_roughly_80_10_10(rows: dict[str, list]) -> None:
    splits = np.array(rows["split"])
    assert set(splits) == {"train", "val", "test"}
    assert abs(np.mean(splits == "train") - 0.8) < 0.07
    assert abs(np.mean(splits == "val") - 0.1) < 0.05
    assert abs(np.mean(splits == "test") - 0.1) < 0.05


def test_missing_cells_only_where_documented(tmp_path: Path) -> None:
    out = tmp_path / "holes"
    rows = read(generate_world(out, n=120, seed=2, missing=0.5))
    for name, values in rows.items():
        nulls = [v is None for v in values]
        if name not in NULLABLE:
            assert not any(nulls), name
        elif name in ("image", "audio", "caption"):
            assert 0.35 < np.mean(nulls) < 0.65, name
    groups = [
        (
            rows["image"][i] is None,
            rows["audio"][i] is None,
            rows["caption"][i] is None,
            all(rows[c][i] is None for c in TABULAR),
        )
        for i in range(120)
    ]
    assert not any(all(g) for g in groups)
    assert len(list((out / "images").iterdir())) == sum(not g[0] for g in groups)


def test_missing_only_removes_cells(rows: dict[str, list], tmp_path: Path) -> None:
    holes = read(generate_world(tmp_path / "holes", n=40, seed=0, missing=0.5))
    for name, values in holes.items():
        both = [(v, w) for v, w in zip(values, rows[name], strict=False) if None not in (v, w)]
        assert all(v == w for v, w in both), name
    assert sum(v is None for v in holes["image"]) > 10


def test_without_missing_only_single_tabular_cells_are_null(rows: dict[str, list]) -> None:
    nulls = {c: np.mean([v is None for v in rows[c]]) for c in NULLABLE}
    assert all(0.0 <= nulls[m] < 0.12 for m in ("image", "audio", "caption"))
    assert all(0.05 < nulls[c] < 0.3 for c in TABULAR), nulls


def test_existing_out_is_refused(root: Path) -> None:
    before = sorted(p.name for p in root.iterdir())
    with pytest.raises(DataError, match="already exists"):
        generate_world(root, n=5)
    assert sorted(p.name for p in root.iterdir()) == before


def test_interrupted_run_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupt(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(pq, "write_table", interrupt)  # after every image and clip is written
    with pytest.raises(KeyboardInterrupt):
        generate_world(tmp_path / "cut", n=10)
    assert list(tmp_path.iterdir()) == []


# --- the documented dependencies, measured from the files -----------------------------------


def test_image_border_brightness_separates_light(
    rows: dict[str, list], images: dict[int, np.ndarray]
) -> None:
    index = list(images)
    measure = np.array([brightness(images[i]) for i in index])
    dark_max, bright_min = separation(measure, column(rows, "latent_light", index))
    assert dark_max < 100 < 150 < bright_min


def test_image_edge_variance_separates_pattern(
    rows: dict[str, list], images: dict[int, np.ndarray]
) -> None:
    index = list(images)
    measure = np.array([stripiness(images[i]) for i in index])
    plain_max, striped_min = separation(measure, column(rows, "latent_pattern", index))
    assert plain_max < 100 < 300 < striped_min


def test_objects_are_visible_and_area_matches(
    rows: dict[str, list], images: dict[int, np.ndarray]
) -> None:
    index = list(images)
    measured = np.array([object_area(images[i]) for i in index])
    assert np.abs(measured - column(rows, "latent_area", index)).max() <= 3
    assert measured.min() > 25


def test_audio_low_band_separates_hum(rows: dict[str, list], clips: dict[int, np.ndarray]) -> None:
    index = list(clips)
    measure = np.array([hum_energy(clips[i]) for i in index])
    silent_max, hum_min = separation(measure, column(rows, "latent_hum", index))
    assert silent_max * 5 < hum_min


def test_caption_names_every_object_and_nothing_hidden(rows: dict[str, list]) -> None:
    shape_word = re.compile(r"\b(" + "|".join(SHAPES) + r")\b")
    hidden = re.compile(r"\b(dark|bright|light|stripe|striped|plain|hum|harbour|market)\b")
    captions = [(i, c) for i, c in enumerate(rows["caption"]) if c is not None]
    assert len({c for _, c in captions}) > N / 2
    for i, caption in captions:
        assert len(shape_word.findall(caption)) == rows["latent_n_objects"][i], caption
        assert not hidden.search(caption), caption


def test_answers_are_single_words(rows: dict[str, list]) -> None:
    assert all(re.fullmatch(r"[a-z]+", a) for a in rows["answer"])
    counts = [i for i, q in enumerate(rows["question"]) if q == "how many objects are there?"]
    assert counts
    for i in counts:
        assert rows["answer"][i] == ("one", "two", "three")[rows["latent_n_objects"][i] - 1]
    assert len({q.split(" ")[1] for q in rows["question"]}) >= 4


def test_targets_follow_their_formulas(rows: dict[str, list]) -> None:
    n, light, venue, pattern, hum = (
        np.array(rows[f"latent_{k}"]) for k in ("n_objects", "light", "venue", "pattern", "hum")
    )
    assert np.array_equal(rows["scene_class"], (n - 1) * 4 + light * 2 + venue)
    assert np.array_equal(rows["synergy"], pattern ^ hum)
    assert set(rows["scene_class"]) == set(range(NUM_SCENE_CLASSES))
    shown = [i for i, v in enumerate(rows["venue"]) if v is not None]
    assert [rows["venue"][i] for i in shown] == [("harbour", "market")[venue[i]] for i in shown]


def test_score_follows_area_temperature_pattern_and_hum(
    rows: dict[str, list], images: dict[int, np.ndarray]
) -> None:
    index = [i for i in images if rows["temperature"][i] is not None]
    area = np.array([object_area(images[i]) for i in index])
    temperature = column(rows, "temperature", index)
    score = column(rows, "score", index)
    assert np.corrcoef(score, area)[0, 1] > 0.4
    assert np.corrcoef(score, temperature)[0, 1] > 0.4
    pattern, hum = column(rows, "latent_pattern", index), column(rows, "latent_hum", index)
    residual = score - 10 * area / 4096 - 0.8 * (temperature - 20) / 5 - 0.5 * pattern - 0.5 * hum
    assert np.std(residual) < 0.15
    assert abs(np.mean(residual)) < 0.05


def test_synergy_needs_image_and_audio_together(
    rows: dict[str, list], images: dict[int, np.ndarray], clips: dict[int, np.ndarray]
) -> None:
    index = [i for i in images if i in clips]
    pattern = np.array([stripiness(images[i]) > 200 for i in index], dtype=int)
    hum = np.array([hum_energy(clips[i]) > 100 for i in index], dtype=int)
    synergy = column(rows, "synergy", index)
    assert abs(np.mean(pattern == synergy) - 0.5) < 0.12
    assert abs(np.mean(hum == synergy) - 0.5) < 0.12
    assert np.mean((pattern ^ hum) == synergy) == 1.0
