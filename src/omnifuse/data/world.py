"""The generated world: a deterministic synthetic multimodal dataset written to disk.

Each sample is a small latent scene (1-3 coloured shapes plus a few hidden factors) rendered
into four modalities: a 64x64 PNG image, a 1 s 16 kHz WAV clip, a caption with a question and
answer, and a few tabular columns. The targets are built so that some need one modality, some
need several together; docs/world.md describes exactly which.

    manifest = generate_world("worlds/small", n=3000, seed=0)
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf
from PIL import Image, ImageDraw
from tqdm import tqdm

from omnifuse.errors import ConfigError, DataError
from omnifuse.registry import register_dataset

SHAPES = ("circle", "square", "triangle")
COLOURS = ("red", "green", "blue", "yellow")
SIZES = ("small", "large")
VENUES = ("harbour", "market")
OPERATORS = ("alba", "bruno", "chen", "dara", "emeka")
SAMPLE_RATE = 16000
IMAGE_SIZE = 64
NUM_SCENE_CLASSES = 12
COUNT_WORDS = ("one", "two", "three")
SCENE_CLASS_NAMES = tuple(
    f"{count} object{'s' if count > 1 else ''}, {light}, {venue}"
    for count in (1, 2, 3)
    for light in ("dark", "bright")
    for venue in VENUES
)
SYNERGY_CLASS_NAMES = ("pattern equals hum", "pattern differs from hum")
VERSION = 2  # in meta.json and the cache key: bump when the same options build another world

_RADIUS = {"small": (5.0, 7.0), "large": (10.0, 12.5)}
_RGB = {
    "red": (210, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 70, 220),
    "yellow": (225, 205, 40),
}
_BACKGROUND = {0: (30.0, 60.0), 1: (175.0, 220.0)}
_STRIPE_AMPLITUDE = 25.0
_PIXEL_NOISE = 6.0
_PITCH_HZ = {"red": 330.0, "green": 440.0, "blue": 587.0, "yellow": 784.0}
_HARMONICS = {
    "circle": {1: 1.0},
    "square": {1: 1.0, 3: 1 / 3, 5: 1 / 5, 7: 1 / 7},
    "triangle": {1: 1.0, 2: 0.5, 3: 0.25, 4: 0.125},
}
_LOUDNESS = {"small": 0.07, "large": 0.14}
_HUM = ((100.0, 0.05), (200.0, 0.025))
_AUDIO_NOISE = 0.02
_TABULAR_MISSING = 0.1
_SPLITS = (("train", 0.8), ("val", 0.9), ("test", 1.0))
_GROUPS = ("image", "audio", "caption", "tabular")

_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("split", pa.string()),
        ("image", pa.string()),
        ("audio", pa.string()),
        ("caption", pa.string()),
        ("question", pa.string()),
        ("answer", pa.string()),
        ("venue", pa.string()),
        ("temperature", pa.float64()),
        ("humidity", pa.float64()),
        ("operator", pa.string()),
        ("scene_class", pa.int64()),
        ("synergy", pa.int64()),
        ("score", pa.float64()),
        ("latent_n_objects", pa.int64()),
        ("latent_light", pa.int64()),
        ("latent_pattern", pa.int64()),
        ("latent_hum", pa.int64()),
        ("latent_venue", pa.int64()),
        ("latent_area", pa.int64()),
    ]
)


@dataclass(frozen=True)
class WorldObject:
    """One shape in a scene; `x`, `y` is its centre and `radius` its bounding circle in pixels."""

    shape: str
    colour: str
    size: str
    radius: float
    x: float
    y: float


@dataclass(frozen=True)
class Scene:
    """The latent factors of one sample; objects are sorted left to right."""

    objects: tuple[WorldObject, ...]
    light: int
    pattern: int
    hum: int
    venue: int
    temperature: float

    @property
    def scene_class(self) -> int:
        return (len(self.objects) - 1) * 4 + self.light * 2 + self.venue

    @property
    def synergy(self) -> int:
        return self.pattern ^ self.hum


@register_dataset("world", version=VERSION)
def generate_world(
    out: Path | str, progress: bool = False, *, n: int, seed: int = 0, missing: float = 0.05
) -> Path:
    """The generated multimodal world (docs/world.md): write n samples under `out`; return
    the manifest path (out / "manifest.parquet")."""
    out = Path(out)
    if n < 1:
        raise ConfigError(f"world: n must be at least 1, got {n}")
    if not 0.0 <= missing < 1.0:
        raise ConfigError(f"world: missing must be in [0, 1), got {missing}")
    if out.exists():
        raise DataError(f"world: {out} already exists")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        _write_world(tmp, n=n, seed=seed, missing=missing, progress=progress)
        tmp.chmod(0o755)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out / "manifest.parquet"


def _write_world(root: Path, *, n: int, seed: int, missing: float, progress: bool) -> None:
    """Write every file of the dataset into `root`."""
    (root / "images").mkdir()
    (root / "audio").mkdir()
    width = max(6, len(str(n - 1)))
    children = np.random.default_rng(seed).spawn(n)
    rows = [
        _write_sample(root, f"{i:0{width}d}", rng, missing)
        for i, rng in enumerate(tqdm(children, desc="world", unit="sample", disable=not progress))
    ]
    table = pa.Table.from_pylist(rows, schema=_SCHEMA)
    pq.write_table(table, root / "manifest.parquet")
    info = {
        "generator": "world",
        "version": VERSION,
        "n": n,
        "seed": seed,
        "missing": float(missing),
        "classes": {"scene_class": list(SCENE_CLASS_NAMES), "synergy": list(SYNERGY_CLASS_NAMES)},
    }
    (root / "world.json").write_text(json.dumps(info, indent=2) + "\n")


def _write_sample(
    root: Path, sample_id: str, rng: np.random.Generator, missing: float
) -> dict[str, object]:
    """Draw one sample, write its present image and audio files and return its manifest row."""
    split = _draw_split(rng)
    scene = _draw_scene(rng)
    image, area = _render_image(scene, rng)
    audio = _render_audio(scene, rng)
    caption = _caption(scene, rng)
    question, answer = _question(scene, rng)
    tabular = _tabular(scene, rng)
    # pattern and hum also move the score, so that encoders learn to see and hear them; the
    # synergy label then tests whether a fusion can combine them.
    score = 10.0 * area / IMAGE_SIZE**2 + 0.8 * (scene.temperature - 20.0) / 5.0
    score += 0.5 * scene.pattern + 0.5 * scene.hum + rng.normal(0.0, 0.1)
    absent = _draw_absent(rng, missing)

    image_path = audio_path = None
    if "image" not in absent:
        image_path = f"images/{sample_id}.png"
        Image.fromarray(image).save(root / image_path)
    if "audio" not in absent:
        audio_path = f"audio/{sample_id}.wav"
        sf.write(root / audio_path, audio, SAMPLE_RATE, subtype="PCM_16")
    if "tabular" in absent:
        tabular = {"venue": None, "temperature": np.nan, "humidity": np.nan, "operator": None}
    return {
        "id": sample_id,
        "split": split,
        "image": image_path,
        "audio": audio_path,
        "caption": None if "caption" in absent else caption,
        "question": question,
        "answer": answer,
        **tabular,
        "scene_class": scene.scene_class,
        "synergy": scene.synergy,
        "score": float(score),
        "latent_n_objects": len(scene.objects),
        "latent_light": scene.light,
        "latent_pattern": scene.pattern,
        "latent_hum": scene.hum,
        "latent_venue": scene.venue,
        "latent_area": area,
    }


def _draw_split(rng: np.random.Generator) -> str:
    """train, val or test with probabilities 0.8, 0.1, 0.1."""
    u = rng.random()
    return next(name for name, upper in _SPLITS if u < upper)


def _draw_absent(rng: np.random.Generator, missing: float) -> frozenset[str]:
    """The modality groups absent from a sample; redrawn until at least one is present."""
    while True:
        draws = rng.random(len(_GROUPS))
        absent = frozenset(g for g, u in zip(_GROUPS, draws, strict=True) if u < missing)
        if len(absent) < len(_GROUPS):
            return absent


# --- latent scene ---------------------------------------------------------------------------


def _draw_scene(rng: np.random.Generator) -> Scene:
    """Draw the objects and hidden factors of one scene, all independent and uniform."""
    count = int(rng.integers(1, 4))
    shapes = rng.integers(len(SHAPES), size=count)
    colours = rng.integers(len(COLOURS), size=count)
    sizes = rng.integers(len(SIZES), size=count)
    radii = np.array([rng.uniform(*_RADIUS[SIZES[s]]) for s in sizes])
    xs, ys = _layout(rng, radii)
    objects = tuple(
        WorldObject(SHAPES[sh], COLOURS[co], SIZES[si], float(r), float(x), float(y))
        for sh, co, si, r, x, y in sorted(
            zip(shapes, colours, sizes, radii, xs, ys, strict=True), key=lambda o: o[4]
        )
    )
    light, pattern, hum, venue = (int(v) for v in rng.integers(2, size=4))
    return Scene(objects, light, pattern, hum, venue, float(rng.normal(20.0, 5.0)))


def _layout(
    rng: np.random.Generator, radii: np.ndarray, batch: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Centres inside the image (off its 1-pixel frame), not overlapping, x at least 4 px apart.

    Candidate layouts are drawn in vectorised batches and the first valid one is kept.
    """
    low, high = radii + 1.0, IMAGE_SIZE - 2.0 - radii
    pairs = [(a, b) for a in range(len(radii)) for b in range(a + 1, len(radii))]
    while True:
        xs = rng.uniform(low, high, size=(batch, len(radii)))
        ys = rng.uniform(low, high, size=(batch, len(radii)))
        ok = np.ones(batch, dtype=bool)
        for a, b in pairs:
            gap = np.hypot(xs[:, a] - xs[:, b], ys[:, a] - ys[:, b]) - radii[a] - radii[b]
            ok &= (gap >= 2.0) & (np.abs(xs[:, a] - xs[:, b]) >= 4.0)
        if ok.any():
            first = int(np.argmax(ok))
            return xs[first], ys[first]


# --- image ----------------------------------------------------------------------------------


def _render_image(scene: Scene, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """The scene as a 64x64 RGB uint8 array, and the total object area in pixels."""
    labels = _object_labels(scene.objects)
    pixels = _background(scene, rng)
    for k, obj in enumerate(scene.objects, start=1):
        colour = np.array(_RGB[obj.colour]) + rng.integers(-15, 16, size=3)
        pixels[labels == k] = colour
    pixels += rng.normal(0.0, _PIXEL_NOISE, size=pixels.shape)
    image = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    return image, int(np.count_nonzero(labels))


def _object_labels(objects: tuple[WorldObject, ...]) -> np.ndarray:
    """A label map: 0 for background, k for the k-th object (1-based), drawn with Pillow."""
    canvas = Image.new("L", (IMAGE_SIZE, IMAGE_SIZE), 0)
    draw = ImageDraw.Draw(canvas)
    for k, obj in enumerate(objects, start=1):
        x, y, r = obj.x, obj.y, obj.radius
        if obj.shape == "circle":
            draw.ellipse((x - r, y - r, x + r, y + r), fill=k)
        elif obj.shape == "square":
            h = r / np.sqrt(2.0)
            draw.rectangle((x - h, y - h, x + h, y + h), fill=k)
        else:
            angles = np.deg2rad([-90.0, 30.0, 150.0])
            corners = [(x + r * np.cos(a), y + r * np.sin(a)) for a in angles]
            draw.polygon(corners, fill=k)
    return np.asarray(canvas)


def _background(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """A dark or bright, slightly tinted float background, with diagonal stripes if patterned."""
    level = rng.uniform(*_BACKGROUND[scene.light])
    tint = rng.uniform(-10.0, 10.0, size=3)
    period = rng.uniform(6.0, 10.0)
    phase = rng.uniform(0.0, period)
    direction = 1 if rng.random() < 0.5 else -1
    if scene.pattern:
        y, x = np.mgrid[:IMAGE_SIZE, :IMAGE_SIZE]
        bands = np.where((x + direction * y + phase) % period < period / 2, 1.0, -1.0)
        stripes = _STRIPE_AMPLITUDE * bands
    else:
        stripes = np.zeros((IMAGE_SIZE, IMAGE_SIZE))
    return level + stripes[:, :, None] + tint


# --- audio ----------------------------------------------------------------------------------


def _render_audio(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """One second of mono float32 audio: a note per object left to right, hum and noise."""
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    wave = np.zeros(SAMPLE_RATE)
    for obj in scene.objects:
        onset = 0.05 + 0.65 * obj.x / (IMAGE_SIZE - 1)
        duration = rng.uniform(0.2, 0.25)
        start, length = round(onset * SAMPLE_RATE), round(duration * SAMPLE_RATE)
        note = _note(obj, t[:length], rng.uniform(0.0, 2 * np.pi))
        wave[start : start + length] += _LOUDNESS[obj.size] * _envelope(t[:length]) * note
    hum_phases = rng.uniform(0.0, 2 * np.pi, size=len(_HUM))
    if scene.hum:
        for (freq, amp), phase in zip(_HUM, hum_phases, strict=True):
            wave += amp * np.sin(2 * np.pi * freq * t + phase)
    wave += rng.normal(0.0, _AUDIO_NOISE, size=SAMPLE_RATE)
    return wave.astype(np.float32)


def _note(obj: WorldObject, t: np.ndarray, phase: float) -> np.ndarray:
    """The object's tone at unit RMS: colour sets the pitch, shape the harmonics."""
    freq = _PITCH_HZ[obj.colour]
    harmonics = _HARMONICS[obj.shape]
    tone = sum(a * np.sin(2 * np.pi * k * freq * t + k * phase) for k, a in harmonics.items())
    return tone / np.sqrt(sum(a * a for a in harmonics.values()) / 2)


def _envelope(t: np.ndarray, attack: float = 0.01, decay: float = 0.04) -> np.ndarray:
    """A trapezoid: linear rise over `attack` seconds and linear fall over the last `decay`."""
    duration = len(t) / SAMPLE_RATE
    return np.clip(np.minimum(t / attack, (duration - t) / decay), 0.0, 1.0)


# --- text -----------------------------------------------------------------------------------

_CAPTIONS = {
    1: ("a single {0}", "just a {0}", "only a {0}", "there is a {0} and nothing else"),
    2: (
        "a {0} left of a {1}",
        "a {1} to the right of a {0}",
        "a {0} on the left and a {1} on the right",
        "from left to right: a {0} and a {1}",
    ),
    3: (
        "from left to right: a {0}, a {1} and a {2}",
        "a {0} on the left, a {1} in the middle and a {2} on the right",
        "a {1} between a {0} on the left and a {2} on the right",
        "a {2} on the right, a {1} in the middle and a {0} on the left",
    ),
}


def _caption(scene: Scene, rng: np.random.Generator) -> str:
    """Each object's size, colour and shape in left-to-right order, from a random template."""
    templates = _CAPTIONS[len(scene.objects)]
    phrases = [f"{o.size} {o.colour} {o.shape}" for o in scene.objects]
    return templates[int(rng.integers(len(templates)))].format(*phrases)


def _question(scene: Scene, rng: np.random.Generator) -> tuple[str, str]:
    """A random question about the objects and its one-word answer."""
    candidates = [c for c in _questions(scene.objects, rng).values() if c]
    options = candidates[int(rng.integers(len(candidates)))]
    return options[int(rng.integers(len(options)))]


def _questions(
    objects: tuple[WorldObject, ...], rng: np.random.Generator
) -> dict[str, list[tuple[str, str]]]:
    """Every well-posed question for the scene, by type; references are always unambiguous."""
    shapes = [o.shape for o in objects]
    keys = [(o.colour, o.shape) for o in objects]
    named = [i for i, key in enumerate(keys) if keys.count(key) == 1]
    asked = SHAPES[int(rng.integers(len(SHAPES)))]

    def the(i: int) -> str:
        return f"the {objects[i].colour} {objects[i].shape}"

    return {
        "count": [("how many objects are there?", COUNT_WORDS[len(objects) - 1])],
        "exists": [(f"is there a {asked}?", "yes" if asked in shapes else "no")],
        "colour": [
            (f"what colour is the {o.shape}?", o.colour)
            for o in objects
            if shapes.count(o.shape) == 1
        ],
        "size": [(f"what size is {the(i)}?", objects[i].size) for i in named],
        "left": [(f"what shape is left of {the(i)}?", shapes[i - 1]) for i in named if i == 1],
        "right": [
            (f"what shape is right of {the(i)}?", shapes[i + 1])
            for i in named
            if i == len(objects) - 2
        ],
    }


# --- tabular --------------------------------------------------------------------------------


def _tabular(scene: Scene, rng: np.random.Generator) -> dict[str, str | float | None]:
    """The four tabular columns, each independently missing with probability 0.1."""
    values: dict[str, str | float | None] = {
        "venue": VENUES[scene.venue],
        "temperature": scene.temperature,
        "humidity": float(rng.normal(60.0, 15.0)),
        "operator": OPERATORS[int(rng.integers(len(OPERATORS)))],
    }
    gone = rng.random(len(values)) < _TABULAR_MISSING
    for (name, value), drop in zip(list(values.items()), gone, strict=True):
        if drop:
            values[name] = np.nan if isinstance(value, float) else None
    return values
