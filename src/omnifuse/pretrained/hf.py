"""Loading a local Hugging Face model directory offline, and finding its transformer blocks."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from torch import nn

from omnifuse.errors import ConfigError
from omnifuse.pretrained.encoder import require

BLOCK_PATHS = ("encoder.layer", "encoder.layers", "vision_model.encoder.layers", "layers")


def model_directory(path: str | Path, encoder: str) -> Path:
    """`path` checked to be a model directory (one with a config.json)."""
    directory = Path(path).expanduser()
    if not (directory / "config.json").is_file():
        raise ConfigError(
            f"encoder '{encoder}' option path: not a Hugging Face model directory "
            f"(no config.json): {path}"
        )
    return directory


def load_config(directory: Path, encoder: str) -> Any:
    transformers = require("transformers", encoder)
    return transformers.AutoConfig.from_pretrained(directory, local_files_only=True)


@contextlib.contextmanager
def quiet(transformers: Any) -> Iterator[None]:
    """No load reports or progress bars from transformers (for example about the unused text
    tower of a CLIP directory); restored afterwards."""
    logging = transformers.utils.logging
    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()


def load_model(directory: Path, encoder: str, class_name: str = "AutoModel") -> Any:
    """A transformers model class's `from_pretrained` on a local directory, in eval mode."""
    transformers = require("transformers", encoder)
    with quiet(transformers):
        model = getattr(transformers, class_name).from_pretrained(directory, local_files_only=True)
    if getattr(model, "pooler", None) is not None:
        model.pooler = None  # the tokens are the output; an unused pooler would get no gradient
    return model.eval()


def preprocessor_config(directory: Path) -> dict[str, Any]:
    """The directory's preprocessor_config.json, or {} when it has none."""
    path = directory / "preprocessor_config.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def transformer_blocks(model: nn.Module, encoder: str) -> list[nn.Module]:
    """The model's list of transformer layers, in order."""
    for path in BLOCK_PATHS:
        try:
            module = model.get_submodule(path)
        except AttributeError:
            continue
        if isinstance(module, nn.ModuleList):
            return list(module)
    raise ConfigError(
        f"encoder '{encoder}': cannot find the transformer blocks of {type(model).__name__} "
        f"(looked for {', '.join(BLOCK_PATHS)})"
    )
