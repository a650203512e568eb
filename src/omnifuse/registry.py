"""Registries of named builders: encoders, fusions, tasks and datasets.

Adding a component is one decorated builder function::

    @register_fusion("perceiver")
    def perceiver(*, dim: int, modalities: Sequence[str], latents: int = 16) -> Fusion: ...

    fusion = create_fusion("perceiver", dim=64, modalities=["image", "text"], latents=8)
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar, get_type_hints

from pydantic import ConfigDict, ValidationError, create_model

from omnifuse.errors import ConfigError

F = TypeVar("F", bound=Callable[..., Any])


def closest(name: str, choices: Iterable[str]) -> str:
    """' (did you mean X?)' for the nearest of `choices`, or '' when none is close."""
    match = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean '{match[0]}'?)" if match else ""


class Registry:
    """Named builder functions of one kind of component."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._builders: dict[str, Callable[..., Any]] = {}
        self._versions: dict[str, int] = {}

    def register(self, name: str, *, version: int = 1) -> Callable[[F], F]:
        """Register a builder; bump `version` when the same options come to build something
        different (a dataset's version is in its cache key)."""

        def decorator(builder: F) -> F:
            if name in self._builders:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._builders[name] = builder
            self._versions[name] = version
            return builder

        return decorator

    def version(self, name: str) -> int:
        self.builder(name)  # the error for an unknown name
        return self._versions[name]

    def names(self) -> list[str]:
        return sorted(self._builders)

    def builder(self, name: str) -> Callable[..., Any]:
        if name not in self._builders:
            raise ConfigError(
                f"unknown {self.kind} '{name}'{closest(name, self._builders)}; "
                f"known: {', '.join(self.names())}"
            )
        return self._builders[name]

    def options(self, name: str) -> dict[str, inspect.Parameter]:
        """The keyword options a builder accepts."""
        params = inspect.signature(self.builder(name)).parameters
        return {k: p for k, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}

    def validate(self, name: str, options: Mapping[str, Any], where: str) -> dict[str, Any]:
        """Type-check `options` against the builder's keyword-only parameters.

        Returns the validated options; a ConfigError names `where` and the field.
        """
        builder = self.builder(name)
        hints = get_type_hints(builder)
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

    def create(self, name: str, /, **kwargs: Any) -> Any:
        return self.builder(name)(**kwargs)


ENCODERS = Registry("encoder")
FUSIONS = Registry("fusion")
TASKS = Registry("task")
DATASETS = Registry("dataset")

register_encoder = ENCODERS.register
register_fusion = FUSIONS.register
register_task = TASKS.register
register_dataset = DATASETS.register


def _load_builtins() -> None:
    # Importing the packages runs their register_* decorators.
    import omnifuse.fusion
    import omnifuse.modalities
    import omnifuse.pretrained
    import omnifuse.tasks  # noqa: F401


def list_encoders() -> list[str]:
    _load_builtins()
    return ENCODERS.names()


def list_fusions() -> list[str]:
    _load_builtins()
    return FUSIONS.names()


def list_tasks() -> list[str]:
    _load_builtins()
    return TASKS.names()


def list_datasets() -> list[str]:
    import omnifuse.data  # noqa: F401

    return DATASETS.names()


def create_encoder(name: str, /, **kwargs: Any) -> Any:
    _load_builtins()
    return ENCODERS.create(name, **kwargs)


def create_fusion(name: str, /, **kwargs: Any) -> Any:
    _load_builtins()
    return FUSIONS.create(name, **kwargs)


def create_task(name: str, /, **kwargs: Any) -> Any:
    _load_builtins()
    return TASKS.create(name, **kwargs)
