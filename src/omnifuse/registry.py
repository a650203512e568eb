"""Registries of named builders: modality kinds, encoders, fusions, tasks and datasets.

Adding a component is one decorated builder in its own file; the package's import registers
the built-ins, and installed plugins (the `omnifuse.plugins` entry-point group) register
theirs the first time a registry is read::

    >>> import omnifuse
    >>> from omnifuse.registry import create_fusion, list_fusions
    >>> "perceiver" in list_fusions()
    True
    >>> fusion = create_fusion("perceiver", dim=64, modalities=["image", "text"], latents=8)
    >>> type(fusion).__name__
    'PerceiverFusion'
"""

from __future__ import annotations

import difflib
import importlib.metadata
import inspect
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar, get_type_hints

from pydantic import ConfigDict, ValidationError, create_model

from omnifuse.errors import ConfigError

F = TypeVar("F", bound=Callable[..., Any])

PLUGIN_GROUP = "omnifuse.plugins"
log = logging.getLogger(__name__)


def closest(name: str, choices: Iterable[str]) -> str:
    """' (did you mean X?)' for the nearest of `choices`, or '' when none is close."""
    match = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean '{match[0]}'?)" if match else ""


class Registry:
    """Named builder functions (or classes) of one kind of component, each with the facts
    its registration declares (`info`) and the package that registered it (`origin`)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._builders: dict[str, Callable[..., Any]] = {}
        self._info: dict[str, dict[str, Any]] = {}
        self._origin: dict[str, str] = {}

    def register(self, name: str, *, version: int = 1, **info: Any) -> Callable[[F], F]:
        """Register a builder; bump `version` when the same options come to build something
        different (a dataset's version is in its cache key). `info` holds what the component
        declares about itself (an encoder's `kinds`, a kind's `config` class)."""

        def decorator(builder: F) -> F:
            if name in self._builders:
                raise ValueError(
                    f"{self.kind} '{name}' is registered twice "
                    f"(by {self._origin[name]} and {_registering or 'omnifuse'})"
                )
            self._builders[name] = builder
            self._info[name] = {"version": version, **info}
            self._origin[name] = _registering or "omnifuse"
            return builder

        return decorator

    def names(self) -> list[str]:
        load_plugins()
        return sorted(self._builders)

    def builder(self, name: str) -> Callable[..., Any]:
        load_plugins()
        if name not in self._builders:
            raise ConfigError(
                f"unknown {self.kind} '{name}'{closest(name, self._builders)}; "
                f"known: {', '.join(self.names())}"
            )
        return self._builders[name]

    def info(self, name: str) -> dict[str, Any]:
        """What the registration declared, with its `version`."""
        self.builder(name)  # the error for an unknown name
        return self._info[name]

    def version(self, name: str) -> int:
        return int(self.info(name)["version"])

    def origin(self, name: str) -> str:
        """'omnifuse' for a built-in, else the plugin entry point that registered it."""
        self.builder(name)
        return self._origin[name]

    def options(self, name: str) -> dict[str, inspect.Parameter]:
        """The keyword options a builder accepts."""
        params = inspect.signature(self.builder(name)).parameters
        return {k: p for k, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}

    def validate(self, name: str, options: Mapping[str, Any], where: str) -> dict[str, Any]:
        """Type-check `options` against the builder's keyword-only parameters.

        Returns the validated options; a ConfigError names `where` and the field.
        """
        builder = self.builder(name)
        hints = get_type_hints(builder.__init__ if isinstance(builder, type) else builder)  # type: ignore[misc]
        fields: dict[str, Any] = {
            key: (hints.get(key, Any), ... if p.default is p.empty else p.default)
            for key, p in self.options(name).items()
        }
        schema = create_model(
            f"{self.kind}_{name}", __config__=ConfigDict(extra="forbid"), **fields
        )
        try:
            validated = schema.model_validate(dict(options))
        except ValidationError as error:
            first = error.errors()[0]
            key = ".".join(str(p) for p in first["loc"])
            message = first["msg"]
            if first["type"] == "extra_forbidden":
                message = f"unknown option for {self.kind} '{name}'{closest(key, fields)}"
            elif first["type"] == "missing":
                message = f"required by {self.kind} '{name}'"
            raise ConfigError(f"{where}.{key}: {message}") from None
        return {key: getattr(validated, key) for key in options}

    def create(self, name: str, /, *args: Any, **kwargs: Any) -> Any:
        return self.builder(name)(*args, **kwargs)


KINDS = Registry("modality kind")
ENCODERS = Registry("encoder")
FUSIONS = Registry("fusion")
TASKS = Registry("task")
DATASETS = Registry("dataset")
REGISTRIES = (KINDS, ENCODERS, FUSIONS, TASKS, DATASETS)

register_encoder = ENCODERS.register
register_fusion = FUSIONS.register
register_task = TASKS.register
register_dataset = DATASETS.register


def register_kind(name: str, *, config: type) -> Callable[[F], F]:
    """Register a `Modality` class as the kind `name`; `config` is its pydantic config model
    (with `kind: Literal[name]`), from which the run config's `modalities` entries of that
    kind are validated."""
    return KINDS.register(name, config=config)


def list_kinds() -> list[str]:
    return KINDS.names()


def list_encoders(kind: str | None = None) -> list[str]:
    """Every encoder, or those registered for modality kind `kind`."""
    return [n for n in ENCODERS.names() if kind is None or kind in ENCODERS.info(n)["kinds"]]


def list_fusions() -> list[str]:
    return FUSIONS.names()


def list_tasks() -> list[str]:
    return TASKS.names()


def list_datasets() -> list[str]:
    return DATASETS.names()


def create_modality(name: str, config: Any) -> Any:
    """The `Modality` of kind `config.kind` named `name`."""
    return KINDS.create(config.kind, name, config)


def create_encoder(name: str, /, **kwargs: Any) -> Any:
    return ENCODERS.create(name, **kwargs)


def create_fusion(name: str, /, **kwargs: Any) -> Any:
    return FUSIONS.create(name, **kwargs)


def create_task(type_: str, name: str, /, **options: Any) -> Any:
    """The `TaskSpec` of task type `type_` named `name` (`.build(dim=..., modalities=...)`
    makes its module)."""
    return TASKS.create(type_, name, **options)


_registering: str | None = None  # the plugin entry point being loaded
_plugins: dict[str, str] | None = None  # entry point -> "loaded" or its error, once loaded


def load_plugins() -> dict[str, str]:
    """Load every installed plugin once: each entry point of the `omnifuse.plugins` group
    names a module (imported, so its register_* decorators run) or a function (called).
    Returns {entry point: "name = value (distribution)"}; a plugin that fails to load stops
    with a ConfigError naming it."""
    global _plugins, _registering
    if _plugins is not None:
        return _plugins
    _plugins = {}
    for point in sorted(importlib.metadata.entry_points(group=PLUGIN_GROUP), key=str):
        _registering = f"plugin '{point.name}'"
        try:
            loaded = point.load()
            if callable(loaded):
                loaded()
        except Exception as error:
            _plugins = None  # try again next time, and say the same
            raise ConfigError(
                f"plugin '{point.name}' ({point.value}) failed to load: "
                f"{type(error).__name__}: {error}"
            ) from None
        finally:
            _registering = None
        where = f" ({point.dist.name} {point.dist.version})" if point.dist else ""
        _plugins[point.name] = f"{point.value}{where}"
    return _plugins
