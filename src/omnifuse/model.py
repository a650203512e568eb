"""The model: encoders + fusion + task heads, built from a fitted config, saved as
`config.json` + `model.safetensors` and loaded with `OmnifuseModel.from_pretrained(dir)`.

    model = OmnifuseModel.from_pretrained("omnifuse-demo/model")
    output = model(batch)            # ModelOutput
    losses = model.training_forward(batch)
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import cast

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from omnifuse.config import RunConfig, parse_config
from omnifuse.data.batch import Batch
from omnifuse.errors import ConfigError, OmnifuseError
from omnifuse.fusion.base import Fused
from omnifuse.heads.query import QueryDecoder
from omnifuse.layers.attention import masked_mean
from omnifuse.modalities import Modality, Tokens, create_modality
from omnifuse.registry import closest, create_fusion, create_task
from omnifuse.tasks.base import Task, TaskInput

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


def hide(tokens: Tokens, keep: Tensor) -> Tokens:
    """`tokens` masked and zeroed where `keep` is False: per sample (B,) or per token (B, N)."""
    mask = tokens.mask & (keep[:, None] if keep.ndim == 1 else keep)
    return Tokens(tokens.tokens * mask[..., None], mask)


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
        self.teachers = nn.ModuleDict(_teachers(self.encoders, self.task_dict()))
        if config.model.loss_weighting == "uncertainty":
            # Kendall et al. (2018): each task's loss is scaled by exp(-s) and s is added
            self.log_variances = nn.ParameterDict({n: nn.Parameter(torch.zeros(())) for n in tasks})

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
        return {
            name: hide(self.encoders[name](batch.inputs[name], batch.lengths[name]), present[name])
            for name in sorted(self.encoders)
        }

    @torch.no_grad()
    def targets(self, batch: Batch, tokens: dict[str, Tokens]) -> dict[str, Tensor]:
        """Pooled tokens of every modality the samples have, without gradient; from the EMA
        teacher encoder for a modality that has one."""
        pooled = {name: masked_mean(t.tokens, t.mask).detach() for name, t in tokens.items()}
        for name, teacher in self.teachers.items():
            taught = hide(teacher(batch.inputs[name], batch.lengths[name]), batch.present[name])
            pooled[name] = masked_mean(taught.tokens, taught.mask)
        return pooled

    @torch.no_grad()
    def after_step(self) -> None:
        """Called by the training loop after each optimizer step: moves every EMA teacher
        towards its encoder."""
        for name, teacher in self.teachers.items():
            momentum = _momentum(name, self.task_dict())
            for mine, theirs in zip(
                teacher.parameters(), self.encoders[name].parameters(), strict=True
            ):
                mine.lerp_(theirs, 1 - momentum)

    def decode(
        self,
        fused: Fused,
        tasks: dict[str, Task],
        embeddings: dict[str, Tensor],
        targets: dict[str, Tensor],
        batch: Batch,
    ) -> dict[str, Tensor]:
        """The predictions of `tasks`. Tasks with a head or that generate read the fused tokens
        (for a late fusion each modality's part, the predictions then averaged by
        `Fused.combine`); in evaluation, generating tasks generate. Other tasks (alignment) read
        only the embeddings."""
        generating = {n: t for n, t in tasks.items() if t.generates and not self.training}
        reading = {
            n: t
            for n, t in tasks.items()
            if (t.head is not None or t.generates) and n not in generating
        }
        queries = {n: t.head.queries for n, t in reading.items() if t.head is not None}

        def predict(part: Fused) -> dict[str, Tensor]:
            read = self.decoder(part, queries)
            return {
                n: t(TaskInput(read.get(n), part, embeddings, targets, batch))
                for n, t in reading.items()
            }

        outputs = fused.combine(predict) if reading else {}
        for name, task in tasks.items():
            if name in generating:

                def next_logits(prefix: Tensor, rows: Tensor, task: Task = task) -> Tensor:
                    step = fused.select(rows).combine(lambda part: {"": task.step(part, prefix)})
                    return step[""]

                outputs[name] = task.generate(next_logits, len(batch))
            elif name not in reading:
                outputs[name] = task(TaskInput(None, fused, embeddings, targets, batch))
        return outputs

    def forward(self, batch: Batch) -> ModelOutput:
        """Predictions for every task. In training mode, `model.modality_dropout` hides
        modalities of some samples first (`drop_modalities`). A task that hides a modality
        (reconstruction) is decoded from a second fusion in which that modality's tokens are
        hidden: all of them, or in training a random `hide_ratio` of them (masked modelling)."""
        present = batch.present
        if self.training:
            present = drop_modalities(present, self.config.model.modality_dropout)
        every = self.encode(batch)
        targets = self.targets(batch, every)
        tokens = {name: hide(t, present[name]) for name, t in every.items()}
        fused = self.fusion(tokens)
        embeddings = {name: masked_mean(t.tokens, t.mask) for name, t in tokens.items()}
        tasks = self.task_dict()
        outputs = self.decode(
            fused, {n: t for n, t in tasks.items() if t.hides is None}, embeddings, targets, batch
        )
        groups = {(t.hides, t.hide_ratio) for t in tasks.values() if t.hides is not None}
        for hidden, ratio in sorted(groups):  # type: ignore[type-var]
            others = dict(tokens)
            others[hidden] = self.mask_tokens(tokens[hidden], ratio if self.training else 1.0)
            outputs |= self.decode(
                self.fusion(others),
                {n: t for n, t in tasks.items() if (t.hides, t.hide_ratio) == (hidden, ratio)},
                {n: masked_mean(t.tokens, t.mask) for n, t in others.items()},
                targets,
                batch,
            )
        outputs = {name: outputs[name] for name in tasks}
        return ModelOutput(outputs, embeddings, tokens, fused, present)

    @staticmethod
    def mask_tokens(tokens: Tokens, ratio: float) -> Tokens:
        """`tokens` with each token hidden with probability `ratio` (all of them at 1), drawn
        from torch's global RNG."""
        if ratio >= 1:
            return hide(tokens, torch.zeros_like(tokens.mask))
        return hide(tokens, torch.rand(tokens.mask.shape, device=tokens.mask.device) >= ratio)

    def training_forward(self, batch: Batch) -> dict[str, Tensor]:
        """'loss' (the weighted sum) and 'loss/<task>' for each task. Losses see the modalities
        the model saw: a pair hidden by modality dropout does not count for alignment. With
        `model.loss_weighting: uncertainty`, also 'weight/<task>': the learned exp(-s)."""
        output = self(batch)
        batch = replace(batch, present=output.present)
        tasks = self.task_dict()
        losses = {f"loss/{n}": t.loss(output.outputs[n], batch) for n, t in tasks.items()}
        total = torch.zeros(())
        for name, task in tasks.items():
            loss = task.weight * losses[f"loss/{name}"]
            if hasattr(self, "log_variances"):
                s = self.log_variances[name]
                losses[f"weight/{name}"] = torch.exp(-s).detach()
                loss = torch.exp(-s) * loss + s
            total = total + loss
        losses["loss"] = total
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
        weights_path = Path(directory) / WEIGHTS_FILE
        model = cls.build(saved_config(directory))
        missing, unexpected = model.load_state_dict(load_file(str(weights_path)), strict=False)
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
        saved = load_file(str(Path(directory) / WEIGHTS_FILE))
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
    """The config of the model saved in `directory`, checking that its weights are there."""
    directory = Path(directory)
    config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    for path in (config_path, weights_path):
        if not path.is_file():
            raise OmnifuseError(f"{directory}: no {path.name}; not a saved omnifuse model")
    return parse_config(json.loads(config_path.read_text()), str(config_path))


def _teachers(encoders: nn.ModuleDict, tasks: dict[str, Task]) -> dict[str, nn.Module]:
    """A frozen copy of the encoder of each modality that a task wants EMA targets for."""
    teachers = {}
    wanted = {t.hides for t in tasks.values() if t.teacher_momentum is not None}
    for name in sorted(n for n in wanted if n is not None):
        _momentum(name, tasks)
        teachers[name] = copy.deepcopy(encoders[name]).requires_grad_(False)
    return teachers


def _momentum(modality: str, tasks: dict[str, Task]) -> float:
    """The one EMA momentum that the tasks hiding `modality` ask for."""
    asked = {
        t.teacher_momentum
        for t in tasks.values()
        if t.hides == modality and t.teacher_momentum is not None
    }
    if len(asked) != 1:
        raise ConfigError(
            f"model.tasks: tasks that reconstruct '{modality}' ask for different teacher "
            f"momentums ({', '.join(map(str, sorted(asked)))}); use one"
        )
    return asked.pop()


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
