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
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import cast

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from omnifuse.config import RunConfig, parse_config
from omnifuse.errors import ConfigError, OmnifuseError
from omnifuse.heads.query import QueryDecoder
from omnifuse.interfaces import Batch, Fused, Tokens
from omnifuse.layers.attention import masked_mean
from omnifuse.modalities.base import Modality, modalities_of
from omnifuse.registry import closest, create_fusion
from omnifuse.tasks.base import Task, TaskView, hide

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


@dataclass
class ModelOutput:
    outputs: dict[str, Tensor]  # task -> prediction
    embeddings: dict[str, Tensor]  # modality -> (B, D) pooled encoder tokens
    tokens: dict[str, Tokens]  # modality -> encoder tokens, absent samples masked
    fused: Fused
    present: dict[str, Tensor]  # modality -> (B,) what the model saw, after modality dropout
    # training with `model.unimodal_loss` only: task -> (B, ...) each classification and
    # regression task's prediction from one modality of each sample alone (`one_present`)
    alone: dict[str, Tensor] = field(default_factory=dict)


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


def one_present(present: dict[str, Tensor]) -> dict[str, Tensor]:
    """One of each sample's present modalities, drawn uniformly (torch's global RNG), as
    (B,) flags per modality; a sample with none keeps none."""
    names = sorted(present)
    here = torch.stack([present[n] for n in names], 1)  # (B, M)
    scores = torch.rand(here.shape, device=here.device).masked_fill(~here, -1.0)
    chosen = torch.zeros_like(here).scatter_(1, scores.argmax(1, keepdim=True), True) & here
    return {name: chosen[:, i] for i, name in enumerate(names)}


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
        for task in tasks.values():
            task.setup(encoders)
            task.read_preprocessing(modalities)
        if config.model.loss_weighting == "uncertainty":
            # Kendall et al. (2018): each task's loss is scaled by exp(-s) and s is added
            self.log_variances = nn.ParameterDict({n: nn.Parameter(torch.zeros(())) for n in tasks})

    @classmethod
    def build(cls, config: RunConfig) -> OmnifuseModel:
        dim = config.model.dim
        names = sorted(config.modalities)
        modalities = modalities_of(config)
        fusion = config.model.fusion
        # sorted, like the modalities: the same config builds the same model whatever the
        # order of its keys in the file
        tasks = {
            name: config.task_spec(name).build(dim=dim, modalities=names)
            for name in sorted(config.model.tasks)
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

    def encode(
        self,
        batch: Batch,
        present: dict[str, Tensor] | None = None,
        *,
        only: Sequence[str] | None = None,
    ) -> dict[str, Tokens]:
        """Tokens per modality (or per modality of `only`); an absent sample's tokens are
        masked and zeroed. `present` overrides the batch's flags (modality dropout). The batch
        is moved to the model's device first, as in `forward`."""
        batch = batch.to(self.device)
        present = batch.present if present is None else present
        return {
            name: hide(self.encoders[name](batch.inputs[name], batch.lengths[name]), present[name])
            for name in sorted(self.encoders if only is None else only)
        }

    def after_step(self) -> None:
        """Called by the training loop after each optimizer step (EMA teachers follow)."""
        for task in self.task_dict().values():
            task.after_step(dict(self.encoders.items()))

    def read(self, fused: Fused) -> dict[str, Tensor]:
        """task -> (B, Q, D): every task's queries read from `fused` in one decoder pass."""
        queries = {n: t.head.queries for n, t in self.task_dict().items() if t.head is not None}
        return self.decoder(fused, queries)

    @property
    def device(self) -> torch.device:
        """Where the weights are (`model.to(...)`; training puts them on `train.device`)."""
        return next(self.parameters()).device

    def precision(self) -> torch.autocast:
        """`train.precision`: bf16 runs the matrix products in bfloat16 (torch.autocast; the
        weights, their gradients and the optimizer stay float32), fp32 none."""
        bf16 = self.config.train.precision == "bf16"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16)

    def forward(self, batch: Batch) -> ModelOutput:
        """Predictions for every task, each from one call `task(view)`, as float32 whatever
        `train.precision` computed them in. In training mode, `model.modality_dropout` hides
        modalities of some samples first (`drop_modalities`). The batch is moved to the
        model's device; so are the outputs, which callers move back (`.cpu()`) to read."""
        with self.precision():
            output = self._forward(batch.to(self.device))
        outputs = {n: v.float() if v.is_floating_point() else v for n, v in output.outputs.items()}
        embeddings = {n: v.float() for n, v in output.embeddings.items()}
        alone = {n: v.float() for n, v in output.alone.items()}
        return replace(output, outputs=outputs, embeddings=embeddings, alone=alone)

    def _forward(self, batch: Batch) -> ModelOutput:
        present = batch.present
        if self.training:
            present = drop_modalities(present, self.config.model.modality_dropout)
        every = self.encode(batch)
        with torch.no_grad():
            before = {name: masked_mean(t.tokens, t.mask) for name, t in every.items()}
        view = TaskView(
            tokens={name: hide(t, present[name]) for name, t in every.items()},
            batch=batch,
            target_embeddings=before,
            fuse=self.fusion,
            decode=self.read,
        )
        outputs = {name: task(view) for name, task in self.task_dict().items()}
        alone = self._alone(view, present) if self.training else {}
        return ModelOutput(outputs, view.embeddings, view.tokens, view.fused, present, alone)

    def _alone(self, view: TaskView, present: dict[str, Tensor]) -> dict[str, Tensor]:
        """task -> prediction from one present modality of each sample alone, drawn at random
        (`model.unimodal_loss`): one more pass of the fusion and decoder, whatever the number
        of modalities."""
        tasks = {n: t for n, t in self.task_dict().items() if t.per_modality}
        if self.config.model.unimodal_weight() <= 0 or not tasks or len(self.encoders) < 2:
            return {}
        alone = view.alone(one_present(present))
        return {n: t(alone) for n, t in tasks.items()}

    def training_forward(self, batch: Batch) -> dict[str, Tensor]:
        """'loss' (the weighted sum) and 'loss/<task>' for each task. Losses see the modalities
        the model saw: a pair hidden by modality dropout does not count for alignment. With
        `model.loss_weighting: uncertainty`, also 'weight/<task>': the learned exp(-s). With
        `model.unimodal_loss` w > 0, also 'alone/<task>' for each classification and
        regression task: its loss predicted from one present modality of each sample alone,
        added to the total times w and the task's weight."""
        batch = batch.to(self.device)
        output = self(batch)
        batch = replace(batch, present=output.present)
        tasks = self.task_dict()
        with self.precision():  # the losses' own products too (a text decoder's, a teacher's)
            losses = {f"loss/{n}": t.loss(output.outputs[n], batch) for n, t in tasks.items()}
        total = torch.zeros((), device=self.device)
        for name, task in tasks.items():
            loss = task.weight * losses[f"loss/{name}"]
            if hasattr(self, "log_variances"):
                s = self.log_variances[name]
                losses[f"weight/{name}"] = torch.exp(-s).detach()
                loss = torch.exp(-s) * loss + s
            total = total + loss
        if output.alone:
            have = torch.stack(list(output.present.values()), 1).any(1)  # (B,) anything at all
            seen = replace(batch, labelled={t: k & have for t, k in batch.labelled.items()})
            with self.precision():
                for name, prediction in output.alone.items():
                    losses[f"alone/{name}"] = tasks[name].loss(prediction, seen)
                    weight = self.config.model.unimodal_weight() * tasks[name].weight
                    total = total + weight * losses[f"alone/{name}"]
        losses["loss"] = total
        return losses

    def save_pretrained(self, directory: str | Path) -> None:
        """Write config.json and model.safetensors, each atomically."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = json.dumps(self.config.model_dump(mode="json"), indent=2) + "\n"
        _atomic(directory / CONFIG_FILE, lambda path: path.write_text(config))
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        _atomic(directory / WEIGHTS_FILE, lambda path: save_file(state, str(path)))

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> OmnifuseModel:
        """Rebuild from config.json and load model.safetensors strictly; runs no pickled code."""
        weights_path = Path(directory) / WEIGHTS_FILE
        model = cls.build(saved_config(directory))
        weights = saved_weights(directory)
        mine = model.state_dict()
        for key, value in weights.items():
            if key in mine and mine[key].shape != value.shape:
                raise OmnifuseError(
                    f"{weights_path}: weight {key} has shape {tuple(value.shape)}, but "
                    f"config.json builds {tuple(mine[key].shape)}; the saved model is damaged"
                )
        missing, unexpected = model.load_state_dict(weights, strict=False)
        if any(key.startswith("teachers.") for key in unexpected):
            raise OmnifuseError(
                f"{weights_path}: saved by omnifuse 0.1, which kept EMA teachers outside their "
                "tasks; retrain this model with omnifuse 0.2 or later"
            )
        if missing or unexpected:
            raise OmnifuseError(
                f"{weights_path}: weights do not match the config "
                f"(missing {len(missing)}, unexpected {len(unexpected)}, e.g. "
                f"{(missing or unexpected)[0]})"
            )
        return model.eval()

    def load_matching(self, directory: str | Path, parts: Sequence[str] | None = None) -> list[str]:
        """Load every weight of the saved model in `directory` whose name and shape match this
        model's (encoders, fusion, decoder and same-named tasks of a pre-trained model), or
        only those under `parts` (e.g. ["encoders"], ["encoders.image", "fusion"]); returns
        the names loaded.
        Refuses a model that shares no weight with this one."""
        saved_config(directory)
        saved = saved_weights(directory)
        mine = self.state_dict()
        if parts is not None:
            for part in parts:
                if not any(k == part or k.startswith(f"{part}.") for k in mine):
                    known = sorted({k.split(".")[0] for k in mine})
                    raise ConfigError(
                        f"train.init_parts: this model has no part '{part}'"
                        f"{closest(part.split('.')[0], known)}; its parts are "
                        f"{', '.join(known)} (or a dotted path inside one: encoders.image)"
                    )
            saved = {
                k: v
                for k, v in saved.items()
                if any(k == p or k.startswith(f"{p}.") for p in parts)
            }
        matching = {k: v for k, v in saved.items() if k in mine and mine[k].shape == v.shape}
        if not matching:
            raise OmnifuseError(f"{directory}: the saved model shares no weight with this one")
        self.load_state_dict(matching, strict=False)
        return sorted(matching)


def saved_config(directory: str | Path) -> RunConfig:
    """The config of the model saved in `directory`, the one place a model directory is
    opened: both files must be there, the weights' safetensors header readable, config.json
    valid JSON of a config version this omnifuse reads. Each problem is one OmnifuseError
    line naming the file."""
    directory = Path(directory)
    config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    for path in (config_path, weights_path):
        if not path.is_file():
            raise OmnifuseError(f"{directory}: no {path.name}; not a saved omnifuse model")
    try:
        with safe_open(str(weights_path), framework="pt"):
            pass  # the header: its JSON, and tensor offsets within the file's size
    except (SafetensorError, OSError) as error:
        raise OmnifuseError(f"{weights_path}: {_damaged(error)}") from None
    try:
        data = json.loads(config_path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise OmnifuseError(f"{config_path}: not UTF-8 text; the saved model is damaged") from None
    except json.JSONDecodeError as error:
        raise OmnifuseError(
            f"{config_path}: not valid JSON ({error.msg}, line {error.lineno}); "
            "the saved model is damaged"
        ) from None
    version = data.get("version", 1) if isinstance(data, dict) else 1
    if version != 1:
        raise OmnifuseError(
            f"{config_path}: config version {version!r}; this omnifuse reads version 1 "
            "(a model saved by another omnifuse?)"
        )
    return parse_config(data, str(config_path))


def saved_weights(directory: str | Path) -> dict[str, Tensor]:
    """The tensors of `directory/model.safetensors` (no pickle); damage is one line."""
    path = Path(directory) / WEIGHTS_FILE
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise OmnifuseError(f"{path}: {_damaged(error)}") from None


def _damaged(error: Exception) -> str:
    reason = str(error).splitlines()[0] if str(error) else type(error).__name__
    return f"not a readable safetensors file ({reason}); the saved model is damaged"


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
