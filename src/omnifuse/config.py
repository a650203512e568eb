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
import os
from collections.abc import Iterator, Sequence
from importlib import resources
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)

from omnifuse.errors import ConfigError
from omnifuse.registry import (
    ENCODERS,
    FUSIONS,
    KINDS,
    TASKS,
    Registry,
    closest,
    create_task,
    list_encoders,
)


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


class ModalityConfig(StrictModel):
    """What every modality kind's config has: its `kind` and its `encoder`. Each kind's own
    config (in its module under `omnifuse.modalities`, registered with `register_kind`)
    subclasses this with `kind: Literal[name]`, its default encoder and its fields."""

    kind: str
    encoder: Component


class KindError(ValueError):
    """A `modalities` entry that its kind's config rejects: carried through pydantic so that
    the message can name the field inside the entry."""

    def __init__(
        self,
        name: str,
        problem: ValidationError | str,
        *,
        model: type[BaseModel] = StrictModel,
        field: str = "",
    ) -> None:
        super().__init__(str(problem))
        self.name, self.problem, self.model, self.field = name, problem, model, field


def modality_config(name: str, value: Any) -> ModalityConfig:
    """A `modalities` entry validated by the config model of its `kind`."""
    if isinstance(value, ModalityConfig):
        return value
    if not isinstance(value, dict):
        raise KindError(name, f"expected a mapping with a 'kind', got {type(value).__name__}")
    kind = value.get("kind")
    if kind not in KINDS.names():
        known = ", ".join(KINDS.names())
        if kind is None:
            raise KindError(name, f"required; known: {known}", field="kind")
        raise KindError(
            name,
            f"unknown modality kind '{kind}'{closest(str(kind), KINDS.names())}; known: {known}",
            field="kind",
        )
    model: type[ModalityConfig] = KINDS.info(kind)["config"]
    try:
        return model.model_validate(value)
    except ValidationError as error:
        raise KindError(name, error, model=model) from None


# ---------------------------------------------------------------------------- run


class DataConfig(StrictModel):
    """Where samples come from: a manifest file, or a built-in dataset generated and cached."""

    manifest: Path | None = None
    dataset: Component | None = None
    # a folder written by `omnifuse data shard`: its preprocessed samples, splits and fitted
    # statistics (the split options below were applied when it was written)
    shards: Path | None = None
    split_column: str = "split"
    val_fraction: float = Field(0.1, ge=0, lt=1)  # used when the manifest has no split column
    test_fraction: float = Field(0.1, ge=0, lt=1)
    # train on this fraction of the training split only (a subset drawn with train.seed), e.g.
    # to fine-tune with few labels; statistics and class lists are still fitted on the whole
    # training split, and val and test are unchanged
    train_fraction: float = Field(1.0, gt=0, le=1)
    # false: every sample is preprocessed once and held in memory (fastest while it fits);
    # true: samples are read from their files at every use by `workers` processes, so memory
    # is bounded by the batches in flight, not by the dataset (every row is still checked
    # once before training)
    stream: bool = False
    # the most training rows whose files a modality reads to fit its statistics (a seeded
    # sample of the rows that have it; videos 64 at most); label lists and column statistics
    # read every training row's cell, which needs no file
    fit_rows: int = Field(256, ge=1)
    # fitted: how many files each modality's statistics were fitted on
    fitted_on: dict[str, int] | None = None
    # processes reading samples when streaming; None: one per core but one, at most 4
    workers: int | None = Field(None, ge=0)
    # false: a file a manifest names must lie inside the manifest's folder once symlinks are
    # followed (no "../", no absolute path or symlink elsewhere), so a manifest cannot make a
    # run read other files on the machine; true: read them anyway, for trusted data
    allow_outside_root: bool = False

    @property
    def loader_workers(self) -> int:
        """The worker processes batches are read by: 0 (this process) unless streaming."""
        if not self.stream:
            return 0
        if self.workers is not None:
            return self.workers
        return max(1, min(4, (os.cpu_count() or 2) - 1))

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        if [self.manifest, self.dataset, self.shards].count(None) != 2:
            raise ValueError("set exactly one of 'manifest', 'dataset' and 'shards'")
        return self


class ModelConfig(StrictModel):
    dim: int = Field(64, ge=8)
    fusion: Component = Component(type="perceiver")
    tasks: dict[str, Component]
    # chance that each present modality of a training sample is hidden from the model for that
    # step (never the last one present); 0 turns it off, evaluation never drops
    modality_dropout: float = Field(0.0, ge=0, lt=1)
    # weight of the modality-alone loss: in training, every classification and regression
    # task is also predicted by the same encoders, fusion and heads from one present modality
    # of each sample alone (drawn at random, the others hidden), and that loss, times this
    # weight, is added; so with modalities missing at test the model still predicts what the
    # remaining one can. It costs one more fusion and decoder pass per step (late fusion
    # reuses its parts: about 2%). None: 1.0 for late fusion, 0 (off) for the others
    unimodal_loss: float | None = Field(None, ge=0)
    # how task losses are summed: by each task's fixed `weight`, or with learned uncertainty
    # weights on top (Kendall et al., 2018: exp(-s) * weight * loss + s, one s per task)
    loss_weighting: Literal["fixed", "uncertainty"] = "fixed"

    def unimodal_weight(self) -> float:
        """`unimodal_loss`, or its default: on (1.0) for late fusion, where it costs little,
        off for the others (one more fusion pass per step: +30% for perceiver, +54% early)."""
        if self.fusion.type == "unimodal":  # reads one modality: the others alone are a prior
            return 0.0
        if self.unimodal_loss is not None:
            return self.unimodal_loss
        return 1.0 if self.fusion.type == "late" else 0.0

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
    # torch intra-op threads per process; None: OMP_NUM_THREADS if set, else the usable cores
    # less one per data worker and one, shared among the machine's processes (share_cores)
    threads: int | None = Field(None, ge=1)
    # how several processes (torchrun) share the model: ddp, a whole copy on each, gradients
    # averaged; fsdp, each encoder's weights sharded over the ranks (FSDP2 fully_shard) and
    # gathered only for its forward and backward. Unused in a single process.
    strategy: Literal["ddp", "fsdp"] = "ddp"
    # bf16: matrix products in bfloat16 under torch.autocast (weights, gradients and the
    # optimizer stay float32), for training and prediction alike; fp32: none
    precision: Literal["fp32", "bf16"] = "fp32"
    # where the model trains: auto takes a CUDA GPU if torch sees one (each torchrun process
    # its own: LOCAL_RANK), else Apple's MPS, else the CPU; cuda or mps that is not there is
    # an error. Several processes on CUDA exchange through NCCL, on the CPU through gloo.
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    # a saved model (a run's --out folder) to start from: every weight whose name and shape
    # match is loaded, and its fitted preprocessing is reused (pre-train, then fine-tune)
    init: Path | None = None
    # the parts loaded from `init` (encoders, fusion, decoder, tasks, or dotted paths inside
    # them such as encoders.image); None loads them all
    init_parts: list[str] | None = None


class RunConfig(StrictModel):
    version: Literal[1] = 1
    data: DataConfig
    modalities: dict[str, SerializeAsAny[ModalityConfig]]
    model: ModelConfig
    train: TrainConfig = Field(default_factory=TrainConfig)

    @field_validator("modalities", mode="before")
    @classmethod
    def _by_kind(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value  # pydantic says what is wrong
        return {name: modality_config(str(name), entry) for name, entry in value.items()}

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
        """Check component names and options against the registries, each encoder against its
        modality's kind, and each task against the modalities; return self."""
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
        for name, modality in self.modalities.items():
            _check_encoder(name, modality)
        for name in self.model.tasks:
            problem = self.task_spec(name).unmet(sorted(self.modalities))
            if problem is not None:
                raise ConfigError(f"model.tasks.{name}.{problem}")
        return self

    def task_spec(self, name: str) -> Any:
        """The `TaskSpec` of task `name`: its options, target and the modalities it reads."""
        task = self.model.tasks[name]
        return create_task(task.type, name, **task.options)

    def without_modalities(self, keep: Sequence[str]) -> RunConfig:
        """This config restricted to the modalities in `keep`, without the tasks that cannot
        run on those alone (that read a modality left out, or need another one); a ConfigError
        when no task is left."""
        kept = sorted(keep)
        data = self.model_dump(mode="json")
        data["modalities"] = {k: v for k, v in data["modalities"].items() if k in keep}
        data["model"]["tasks"] = {
            name: options
            for name, options in data["model"]["tasks"].items()
            if self.task_spec(name).unmet(kept) is None
        }
        if not data["model"]["tasks"]:
            raise ConfigError(
                f"model.tasks: no task runs on {', '.join(kept)} alone "
                f"(every task reads another modality)"
            )
        return RunConfig.model_validate(data).check()


def _check_encoder(name: str, modality: ModalityConfig) -> None:
    """The encoder is registered for the modality's kind, with the settings it needs."""
    encoder = modality.encoder.type
    info = ENCODERS.info(encoder)
    if modality.kind not in info["kinds"]:
        raise ConfigError(
            f"modalities.{name}.encoder.type: encoder '{encoder}' reads "
            f"{' or '.join(info['kinds'])}, not {modality.kind}; {modality.kind} encoders: "
            f"{', '.join(list_encoders(modality.kind))}"
        )
    for field, value in info.get("needs", {}).items():
        if getattr(modality, field) != value:
            raise ConfigError(
                f"modalities.{name}.{field}: encoder '{encoder}' needs {field}: {value}"
            )


def format_validation_error(error: ValidationError, source: str) -> str:
    """Pydantic's first error as one line: `source: field.path: message`."""
    more = len(error.errors()) - 1
    first = error.errors()[0]
    kind_error = (first.get("ctx") or {}).get("error")
    if isinstance(kind_error, KindError):  # inside one `modalities` entry
        prefix = ".".join(str(p) for p in first["loc"]) + f".{kind_error.name}"
        if isinstance(kind_error.problem, str):
            field = f".{kind_error.field}" if kind_error.field else ""
            line = f"{prefix}{field}: {kind_error.problem}"
        else:
            line = _first_error(kind_error.problem, kind_error.model, prefix)
    else:
        line = _first_error(error, RunConfig, "")
    return f"{source}: {line}" + (f" (and {more} more)" if more else "")


def _first_error(error: ValidationError, root: type[BaseModel], prefix: str) -> str:
    """'field.path: message' for the first error of `root`'s validation, under `prefix`."""
    first = error.errors()[0]
    path, model = _walk(first["loc"], root)
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown field"
        if model is not None:
            message += closest(str(first["loc"][-1]), model.model_fields)
    path = ".".join(p for p in (prefix, path) if p)
    return f"{path or '(top level)'}: {message}"


def _walk(loc: tuple[int | str, ...], root: type[BaseModel]) -> tuple[str, type[BaseModel] | None]:
    """The dotted field path of an error location in `root`, and the model that holds its
    last field."""
    shown: list[str] = []
    current: Any = root
    holder: type[BaseModel] | None = None
    for part in loc:
        holder = None
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            holder = current
            field = current.model_fields.get(str(part))
            current = field.annotation if field else None
        elif get_origin(current) is dict:
            current = get_args(current)[1]
        else:
            current = None
        shown.append(str(part))
    return ".".join(shown), holder


def _unwrap(annotation: Any) -> Any:
    """`X` from `Annotated[X, ...]` and from `X | None`."""
    while True:
        if get_origin(annotation) is Annotated:
            annotation = get_args(annotation)[0]
        elif get_origin(annotation) in (Union, UnionType):
            members = [a for a in get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


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


PRESET_PREFIX = "preset:"


def list_presets() -> list[str]:
    """The configs shipped with the package, each usable as `preset:NAME`."""
    files = resources.files("omnifuse") / "presets"
    return sorted(p.name.removesuffix(".yaml") for p in files.iterdir() if p.name.endswith(".yaml"))


def read_config_file(source: str | Path) -> Any:
    """The parsed content of a YAML or JSON config file, or of `preset:NAME`."""
    if str(source).startswith(PRESET_PREFIX):
        name = str(source).removeprefix(PRESET_PREFIX)
        if name not in list_presets():
            raise ConfigError(
                f"unknown preset '{name}'{closest(name, list_presets())}; "
                f"known: {', '.join(list_presets())}"
            )
        return yaml.safe_load(
            (resources.files("omnifuse") / "presets" / f"{name}.yaml").read_text()
        )
    path = Path(source)
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


def load_config(source: str | Path, overrides: Sequence[str] = ()) -> RunConfig:
    """Read and validate a run config from a YAML or JSON file or `preset:NAME`, with
    `key.path=value` overrides applied before validation."""
    return parse_config(apply_overrides(read_config_file(source), overrides), str(source))
