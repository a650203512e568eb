"""The model: encoders + fusion + task heads, built from a fitted config, saved as
`config.json` + `model.safetensors` and loaded with `OmnifuseModel.from_pretrained(dir)`.

    model = OmnifuseModel.from_pretrained("omnifuse-demo/model")
    output = model(batch)            # ModelOutput
    losses = model.training_forward(batch)
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from omnifuse.config import RunConfig, parse_config
from omnifuse.data.batch import Batch
from omnifuse.errors import OmnifuseError
from omnifuse.fusion.base import Fused
from omnifuse.layers.attention import masked_mean
from omnifuse.modalities import Modality, Tokens, create_modality
from omnifuse.registry import create_fusion, create_task
from omnifuse.tasks.base import Task

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


@dataclass
class ModelOutput:
    outputs: dict[str, Tensor]  # task -> prediction
    embeddings: dict[str, Tensor]  # modality -> (B, D) pooled encoder tokens
    tokens: dict[str, Tokens]  # modality -> encoder tokens, absent samples masked
    fused: Fused


class OmnifuseModel(nn.Module):
    """Composes built parts; `build(config)` makes them from a fitted config."""

    def __init__(
        self,
        *,
        config: RunConfig,
        modalities: dict[str, Modality],
        encoders: dict[str, nn.Module],
        fusion: nn.Module,
        tasks: dict[str, Task],
    ) -> None:
        super().__init__()
        self.config = config
        self.modalities = modalities
        self.encoders = nn.ModuleDict(encoders)
        self.fusion = fusion
        self.tasks = nn.ModuleDict(tasks)

    @classmethod
    def build(cls, config: RunConfig) -> OmnifuseModel:
        dim = config.model.dim
        names = sorted(config.modalities)
        modalities = {n: create_modality(n, config.modalities[n]) for n in names}
        fusion = config.model.fusion
        tasks = {
            name: create_task(task.type, name=name, dim=dim, modalities=names, **task.options)
            for name, task in config.model.tasks.items()
        }
        return cls(
            config=config,
            modalities=modalities,
            encoders={n: m.build_encoder(dim) for n, m in modalities.items()},
            fusion=create_fusion(fusion.type, dim=dim, modalities=names, **fusion.options),
            tasks=tasks,
        )

    def task_dict(self) -> dict[str, Task]:
        """The tasks, typed (an nn.ModuleDict only knows it holds modules)."""
        return {name: cast(Task, task) for name, task in self.tasks.items()}

    def encode(self, batch: Batch) -> dict[str, Tokens]:
        """Tokens per modality; an absent sample's tokens are masked and zeroed."""
        encoded = {}
        for name in sorted(self.encoders):
            tokens = self.encoders[name](batch.inputs[name], batch.lengths[name])
            mask = tokens.mask & batch.present[name][:, None]
            encoded[name] = Tokens(tokens.tokens * mask[..., None], mask)
        return encoded

    def forward(self, batch: Batch) -> ModelOutput:
        tokens = self.encode(batch)
        fused = self.fusion(tokens)
        embeddings = {name: masked_mean(t.tokens, t.mask) for name, t in tokens.items()}
        outputs = {name: task(fused, embeddings) for name, task in self.task_dict().items()}
        return ModelOutput(outputs, embeddings, tokens, fused)

    def training_forward(self, batch: Batch) -> dict[str, Tensor]:
        """'loss' (the weighted sum) and 'loss/<task>' for each task."""
        output = self(batch)
        tasks = self.task_dict()
        losses = {f"loss/{n}": t.loss(output.outputs[n], batch) for n, t in tasks.items()}
        losses["loss"] = sum(
            (t.weight * losses[f"loss/{n}"] for n, t in tasks.items()), torch.zeros(())
        )
        return losses

    def save_pretrained(self, directory: str | Path) -> None:
        """Write config.json and model.safetensors, each atomically."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = json.dumps(self.config.model_dump(mode="json"), indent=2) + "\n"
        _atomic(directory / CONFIG_FILE, lambda path: path.write_text(config))
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        _atomic(directory / WEIGHTS_FILE, lambda path: save_file(state, str(path)))

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> OmnifuseModel:
        """Rebuild from config.json and load model.safetensors strictly; runs no pickled code."""
        directory = Path(directory)
        config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
        for path in (config_path, weights_path):
            if not path.is_file():
                raise OmnifuseError(f"{directory}: no {path.name}; not a saved omnifuse model")
        config = parse_config(json.loads(config_path.read_text()), str(config_path))
        model = cls.build(config)
        missing, unexpected = model.load_state_dict(load_file(str(weights_path)), strict=False)
        if missing or unexpected:
            raise OmnifuseError(
                f"{weights_path}: weights do not match the config "
                f"(missing {len(missing)}, unexpected {len(unexpected)}, e.g. "
                f"{(missing or unexpected)[0]})"
            )
        return model.eval()


def _atomic(path: Path, write: object) -> None:
    """Write through a temporary file in the same folder, then rename over `path`."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(handle)
    try:
        write(Path(temporary))  # type: ignore[operator]
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
