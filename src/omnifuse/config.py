"""The typed configuration of a run: data, modalities, model (encoders, fusion, tasks), training.

A config is loaded from YAML or JSON, validated before any work starts, and saved resolved
(with the statistics fitted on the training split filled in) beside every trained model, so
that `config.json` alone rebuilds the model's architecture and preprocessing.

Components are named by `type` and looked up in a registry; their other keys are the keyword
options of the registered builder, type-checked against its signature::

    model:
      fusion: {type: perceiver, latents: 16}
      tasks:
        scene: {type: classification, target: scene_class}
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from omnifuse.errors import ConfigError
from omnifuse.registry import ENCODERS, FUSIONS, TASKS, Registry, _load_builtins, closest


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Component(BaseModel):
    """A registered component: `type` names the builder, other keys are its options."""

    model_config = ConfigDict(extra="allow")

    type: str

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        return {"type": value} if isinstance(value, str) else value

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


# ---------------------------------------------------------------------------- modalities


class ImageConfig(StrictModel):
    """An image file per row, resized to `size` x `size`, read as RGB (`channels: 3`) or
    greyscale (`channels: 1`: a third of the memory for grey images)."""

    kind: Literal["image"] = "image"
    column: str | None = None
    size: int = Field(64, ge=8)
    channels: Literal[1, 3] = 3
    encoder: Component = Component(type="image_conv")
    # "fitted": per-channel statistics of the training split; "imagenet": the fixed ImageNet
    # statistics that pretrained backbones expect
    normalize: Literal["fitted", "imagenet"] = "fitted"
    mean: list[float] | None = None  # per channel, fitted on the training split
    std: list[float] | None = None

    @model_validator(mode="after")
    def _statistics_fit_channels(self) -> ImageConfig:
        if self.normalize == "imagenet" and self.channels != 3:
            raise ValueError("normalize: imagenet needs channels: 3")
        for name in ("mean", "std"):
            values = getattr(self, name)
            if values is not None and len(values) != self.channels:
                raise ValueError(f"{name} has {len(values)} values for {self.channels} channels")
        return self


class TextConfig(StrictModel):
    """A text value per row as token ids, truncated to `max_length` (an empty cell is absent).

    `tokenizer: bytes` uses UTF-8 bytes; `bpe` a byte-level BPE of `vocab_size` tokens trained
    on the training split (its `merges` are fitted), which still encodes any input.
    """

    kind: Literal["text"] = "text"
    column: str | None = None
    max_length: int = Field(128, ge=1)
    tokenizer: Literal["bytes", "bpe"] = "bytes"
    vocab_size: int = Field(4096, ge=258)  # bpe: the padding id, 256 bytes, then merges
    merges: list[tuple[str, str]] | None = None  # bpe merges, fitted on the training split
    encoder: Component = Component(type="text_transformer")


class AudioConfig(StrictModel):
    """A WAV/FLAC file per row: mono, resampled to `sample_rate`, cut to `max_seconds`; as a
    log-mel spectrogram (n_mels, frames), or as the raw waveform (samples,) for encoders that
    take one (wav2vec2-style)."""

    kind: Literal["audio"] = "audio"
    column: str | None = None
    sample_rate: int = Field(16000, ge=1000)
    max_seconds: float = Field(1.0, gt=0)
    n_mels: int = Field(64, ge=8)
    n_fft: int = Field(400, ge=16)
    hop: int = Field(160, ge=1)
    features: Literal["log_mel", "waveform"] = "log_mel"
    encoder: Component = Component(type="audio_conv")
    mean: float | None = None  # log-mel statistics, fitted on the training split
    std: float | None = None


class TabularConfig(StrictModel):
    """Numeric and categorical columns of the manifest, one token per column."""

    kind: Literal["tabular"] = "tabular"
    numeric: list[str] = []
    categorical: list[str] = []
    encoder: Component = Component(type="tabular_tokens")
    stats: dict[str, tuple[float, float]] | None = None  # numeric column -> (mean, std)
    categories: dict[str, list[str]] | None = None  # categorical column -> known values

    @model_validator(mode="after")
    def _has_columns(self) -> TabularConfig:
        if not self.numeric and not self.categorical:
            raise ValueError("a tabular modality needs numeric or categorical columns")
        return self


class TimeSeriesConfig(StrictModel):
    """A series per row: a .npy or .csv file, or a JSON list, laid out time x channels (a 1-d
    list or array is one channel); NaN marks a gap. Standardised per channel, cut to
    `max_length` steps."""

    kind: Literal["timeseries"] = "timeseries"
    column: str | None = None
    channels: int | None = Field(None, ge=1)  # fitted from the training split when unset
    max_length: int = Field(512, ge=1)
    encoder: Component = Component(type="timeseries_patch")
    mean: list[float] | None = None  # per channel, fitted on the training split
    std: list[float] | None = None


class VideoConfig(StrictModel):
    """A folder of frame images (sorted by name) or a .npy array (T, H, W, C) of uint8 per row;
    `frames` frames sampled uniformly, each resized to `size` x `size` RGB."""

    kind: Literal["video"] = "video"
    column: str | None = None
    frames: int = Field(8, ge=1)
    size: int = Field(64, ge=8)
    encoder: Component = Component(type="video_tubelet")
    mean: list[float] | None = None  # per channel, fitted on the training split
    std: list[float] | None = None


class VectorConfig(StrictModel):
    """A precomputed embedding per row: a JSON list of `dim` numbers or a .npy file."""

    kind: Literal["vector"] = "vector"
    column: str | None = None
    dim: int = Field(ge=1)
    encoder: Component = Component(type="vector_projection")


ModalityConfig = Annotated[
    ImageConfig
    | TextConfig
    | AudioConfig
    | TabularConfig
    | TimeSeriesConfig
    | VideoConfig
    | VectorConfig,
    Field(discriminator="kind"),
]


# ---------------------------------------------------------------------------- run


class DataConfig(StrictModel):
    """Where samples come from: a manifest file, or a built-in dataset generated and cached."""

    manifest: Path | None = None
    dataset: Component | None = None
    split_column: str = "split"
    val_fraction: float = Field(0.1, ge=0, lt=1)  # used when the manifest has no split column
    test_fraction: float = Field(0.1, ge=0, lt=1)
    # train on this fraction of the training split only (a subset drawn with train.seed), e.g.
    # to fine-tune with few labels; statistics and class lists are still fitted on the whole
    # training split, and val and test are unchanged
    train_fraction: float = Field(1.0, gt=0, le=1)

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        if (self.manifest is None) == (self.dataset is None):
            raise ValueError("set exactly one of 'manifest' and 'dataset'")
        return self


class ModelConfig(StrictModel):
    dim: int = Field(64, ge=8)
    fusion: Component = Component(type="perceiver")
    tasks: dict[str, Component]
    # chance that each present modality of a training sample is hidden from the model for that
    # step (never the last one present); 0 turns it off, evaluation never drops
    modality_dropout: float = Field(0.0, ge=0, lt=1)
    # how task losses are summed: by each task's fixed `weight`, or with learned uncertainty
    # weights on top (Kendall et al., 2018: exp(-s) * weight * loss + s, one s per task)
    loss_weighting: Literal["fixed", "uncertainty"] = "fixed"

    @model_validator(mode="after")
    def _has_tasks(self) -> ModelConfig:
        if not self.tasks:
            raise ValueError("a model needs at least one task")
        return self


class TrainConfig(StrictModel):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    warmup_fraction: float = Field(0.05, ge=0, lt=1)
    grad_clip: float = Field(1.0, gt=0)
    seed: int = 0
    checkpoint_every: int = Field(100, ge=0)  # steps between checkpoints (0: epoch ends only)
    threads: int | None = None  # torch intra-op threads; None leaves torch's default
    # a saved model (a run's --out folder) to start from: every weight whose name and shape
    # match is loaded, and its fitted preprocessing is reused (pre-train, then fine-tune)
    init: Path | None = None
    # the parts loaded from `init` (encoders, fusion, decoder, tasks, or dotted paths inside
    # them such as encoders.image); None loads them all
    init_parts: list[str] | None = None


class RunConfig(StrictModel):
    version: Literal[1] = 1
    data: DataConfig
    modalities: dict[str, ModalityConfig]
    model: ModelConfig
    train: TrainConfig = Field(default_factory=TrainConfig)

    @model_validator(mode="after")
    def _consistent(self) -> RunConfig:
        if not self.modalities:
            raise ValueError("at least one modality is needed")
        return self

    def components(self) -> Iterator[tuple[str, Registry, Component]]:
        """Every registered component with its field path."""
        for name, modality in self.modalities.items():
            yield f"modalities.{name}.encoder", ENCODERS, modality.encoder
        yield "model.fusion", FUSIONS, self.model.fusion
        for name, task in self.model.tasks.items():
            yield f"model.tasks.{name}", TASKS, task

    def check(self) -> RunConfig:
        """Check component names and options against the registries; return self."""
        _load_builtins()
        for where, registry, component in self.components():
            if component.type not in registry.names():
                raise ConfigError(
                    f"{where}.type: unknown {registry.kind} '{component.type}'"
                    f"{closest(component.type, registry.names())}; "
                    f"known: {', '.join(registry.names())}"
                )
            component.__pydantic_extra__ = registry.validate(
                component.type, component.options, where
            )
        for name, task in self.model.tasks.items():
            for modality in task.options.get("between", []):
                if modality not in self.modalities:
                    raise ConfigError(
                        f"model.tasks.{name}.between: unknown modality '{modality}'"
                        f"{closest(modality, self.modalities)}; the config defines "
                        f"{', '.join(sorted(self.modalities))}"
                    )
        return self

    def without_modalities(self, keep: list[str]) -> RunConfig:
        """This config restricted to the modalities in `keep`, dropping tasks that need others."""
        data = self.model_dump(mode="json")
        data["modalities"] = {k: v for k, v in data["modalities"].items() if k in keep}
        data["model"]["tasks"] = {
            k: v
            for k, v in data["model"]["tasks"].items()
            if set(v.get("between", [])) <= set(keep)
        }
        return RunConfig.model_validate(data)


def format_validation_error(error: ValidationError, source: str) -> str:
    """Pydantic's first error as one line: `source: field.path: message`."""
    first = error.errors()[0]
    path, model = _walk(first["loc"])
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown field"
        if model is not None:
            message += closest(str(first["loc"][-1]), model.model_fields)
    elif first["type"] == "union_tag_invalid":
        tag, expected = first["ctx"]["tag"], re.findall(r"'(\w+)'", first["ctx"]["expected_tags"])
        path += ".kind"
        message = (
            f"unknown modality kind '{tag}'{closest(tag, expected)}; known: {', '.join(expected)}"
        )
    more = len(error.errors()) - 1
    return f"{source}: {path or '(top level)'}: {message}" + (f" (and {more} more)" if more else "")


def _walk(loc: tuple[int | str, ...]) -> tuple[str, type[BaseModel] | None]:
    """The dotted field path of an error location (without union tags), and the model that
    holds its last field."""
    shown: list[str] = []
    current: Any = RunConfig
    holder: type[BaseModel] | None = None
    for part in loc:
        holder = None
        while get_origin(current) is Annotated:
            current = get_args(current)[0]
        if isinstance(current, type) and issubclass(current, BaseModel):
            holder = current
            field = current.model_fields.get(str(part))
            current = field.annotation if field else None
            shown.append(str(part))
        elif get_origin(current) is dict:
            current = get_args(current)[1]
            shown.append(str(part))
        elif get_origin(current) in (Union, UnionType):
            members = {
                m.model_fields["kind"].default: m
                for m in get_args(current)
                if isinstance(m, type) and issubclass(m, BaseModel) and "kind" in m.model_fields
            }
            if part in members:  # a discriminated union's tag: not a field
                current = members[part]
            else:
                current = None
                shown.append(str(part))
        else:
            current = None
            shown.append(str(part))
    return ".".join(shown), holder


def parse_config(data: Any, source: str = "config") -> RunConfig:
    """Validate a config mapping; any problem becomes one ConfigError line."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    try:
        config = RunConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, source)) from None
    try:
        return config.check()
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None


def apply_overrides(data: Any, overrides: Sequence[str]) -> Any:
    """`data` with each `key.path=value` applied; the value is parsed as YAML (so `3` is an
    int, `[a, b]` a list, `{type: early}` a mapping)."""
    for override in overrides:
        key, sep, text = override.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {override}: expected KEY.PATH=VALUE")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ConfigError(f"--set {override}: the value is not valid YAML") from None
        node = data
        *parents, last = key.split(".")
        for depth, part in enumerate(parents):
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: {'.'.join(parents[:depth])} is not a mapping")
            node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: {'.'.join(parents)} is not a mapping")
        node[last] = value
    return data


def read_config_file(path: str | Path) -> Any:
    """The parsed content of a YAML or JSON config file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read config: {error.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as error:
        line = str(error).splitlines()[0]
        raise ConfigError(
            f"{path}: not valid {path.suffix.lstrip('.') or 'YAML'}: {line}"
        ) from None
    return data


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a run config from a YAML or JSON file."""
    return parse_config(read_config_file(path), str(path))
