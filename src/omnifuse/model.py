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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import cast

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from omnifuse.config import RunConfig, parse_config
from omnifuse.data.batch import Batch
from omnifuse.errors import OmnifuseError
from omnifuse.fusion.base import Fused
from omnifuse.heads.query import QueryDecoder
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
    present: dict[str, Tensor]  # modality -> (B,) what the model saw, after modality dropout


def drop_modalities(present: dict[str, Tensor], rate: float) -> dict[str, Tensor]:
    """Hide each present modality of each sample with probability `rate`, never the last one
    present in a sample (then one of the dropped ones, chosen at random, stays). Draws from
    torch's global RNG, so seeding torch seeds it; rate 0 draws nothing and changes nothing."""
    if rate <= 0 or not present:
        return present
    names = sorted(present)
    here = torch.stack([present[n] for n in names], 1)  # (B, M)
    keep = here & (torch.rand(here.shape, device=here.device) >= rate)
    lost = here.any(1) & ~keep.any(1)  # samples that would be left with nothing
    # revive one of their present modalities, uniformly: the largest random score among them
    scores = torch.rand(here.shape, device=here.device).masked_fill(~here, -1.0)
    revive = torch.zeros_like(here).scatter_(1, scores.argmax(1, keepdim=True), True)
    keep = keep | (revive & lost[:, None])
    return {name: keep[:, i] for i, name in enumerate(names)}


class OmnifuseModel(nn.Module):
    """Composes built parts; `build(config)` makes them from a fitted config."""

    def __init__(
        self,
        *,
        config: RunConfig,
        modalities: dict[str, Modality],
        encoders: dict[str, nn.Module],
        fusion: nn.Module,
        decoder: QueryDecoder,
        tasks: dict[str, Task],
    ) -> None:
        super().__init__()
        self.config = config
        self.modalities = modalities
        self.encoders = nn.ModuleDict(encoders)
        self.fusion = fusion
        self.decoder = decoder  # one Perceiver IO decoder for every task's queries
        self.tasks = nn.ModuleDict(tasks)

    @classmethod
    def build(cls, config: RunConfig) -> OmnifuseModel:
        dim = config.model.dim
        names = sorted(config.modalities)
        modalities = {n: create_modality(n, config.modalities[n]) for n in names}
        fusion = config.model.fusion
        # sorted, like the modalities: the same config builds the same model whatever the
        # order of its keys in the file
        tasks = {
            name: create_task(task.type, name=name, dim=dim, modalities=names, **task.options)
            for name, task in sorted(config.model.tasks.items())
        }
        return cls(
            config=config,
            modalities=modalities,
            encoders={n: m.build_encoder(dim) for n, m in modalities.items()},
            fusion=create_fusion(fusion.type, dim=dim, modalities=names, **fusion.options),
            decoder=QueryDecoder(dim=dim),
            tasks=tasks,
        )

    def task_dict(self) -> dict[str, Task]:
        """The tasks, typed (an nn.ModuleDict only knows it holds modules)."""
        return {name: cast(Task, task) for name, task in self.tasks.items()}

    def encode(self, batch: Batch, present: dict[str, Tensor] | None = None) -> dict[str, Tokens]:
        """Tokens per modality; an absent sample's tokens are masked and zeroed. `present`
        overrides the batch's flags (modality dropout)."""
        present = batch.present if present is None else present
        encoded = {}
        for name in sorted(self.encoders):
            tokens = self.encoders[name](batch.inputs[name], batch.lengths[name])
            mask = tokens.mask & present[name][:, None]
            encoded[name] = Tokens(tokens.tokens * mask[..., None], mask)
        return encoded

    def decode(self, fused: Fused, embeddings: dict[str, Tensor]) -> dict[str, Tensor]:
        """Every task's prediction. Tasks with a head are decoded from the fused tokens, for a
        late fusion on each modality's part and then averaged (`Fused.combine`)."""
        tasks = self.task_dict()
        queries = {name: t.head.queries for name, t in tasks.items() if t.head is not None}

        def predict(part: Fused) -> dict[str, Tensor]:
            read = self.decoder(part, queries)
            return {name: tasks[name](read[name], embeddings) for name in queries}

        outputs = fused.combine(predict)
        outputs |= {name: t(None, embeddings) for name, t in tasks.items() if t.head is None}
        return {name: outputs[name] for name in tasks}

    def forward(self, batch: Batch) -> ModelOutput:
        """Predictions for every task. In training mode, `model.modality_dropout` hides
        modalities of some samples first (`drop_modalities`)."""
        present = batch.present
        if self.training:
            present = drop_modalities(present, self.config.model.modality_dropout)
        tokens = self.encode(batch, present)
        fused = self.fusion(tokens)
        embeddings = {name: masked_mean(t.tokens, t.mask) for name, t in tokens.items()}
        return ModelOutput(self.decode(fused, embeddings), embeddings, tokens, fused, present)

    def training_forward(self, batch: Batch) -> dict[str, Tensor]:
        """'loss' (the weighted sum) and 'loss/<task>' for each task. Losses see the modalities
        the model saw: a pair hidden by modality dropout does not count for alignment."""
        output = self(batch)
        batch = replace(batch, present=output.present)
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
