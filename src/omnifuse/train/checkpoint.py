"""Training checkpoints: one safetensors file holding the model, optimizer and RNG tensors,
with the step, scheduler, Python/NumPy RNG states and history as JSON metadata. Written
atomically (temporary file, then rename); loaded without pickle. The model's and optimizer's
states go through torch.distributed.checkpoint's state-dict API, keyed by parameter name and
whole, so that one file serves a single process, DDP and FSDP alike.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_state_dict,
    set_state_dict,
)

from omnifuse import ranks
from omnifuse.errors import OmnifuseError

CHECKPOINT_FILE = "checkpoint.safetensors"


def _parameter_groups(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[list[str]]:
    """The model's name for each parameter of each of the optimizer's groups."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [[names[id(p)] for p in group["params"]] for group in optimizer.param_groups]


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Optimizer state (keyed by parameter name) as tensors keyed `optim/<name>/<field>`,
    plus its JSON-able rest; by name, not position, so a mismatch is caught, not misapplied."""
    tensors, scalars = {}, {}
    for name, values in state["state"].items():
        for field, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim/{name}/{field}"] = value.detach().contiguous()
            else:
                scalars[f"{name}/{field}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(
    tensors: dict[str, torch.Tensor], meta: dict[str, Any], groups: list[list[str]]
) -> dict[str, Any]:
    """The optimizer state keyed by parameter name, checked against the current `groups`."""
    saved = meta["param_groups"]
    if len(saved) != len(groups) or any(
        set(g["params"]) != set(c) for g, c in zip(saved, groups, strict=False)
    ):
        raise KeyError("the parameters differ")
    state: dict[str, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim/"):
            _, name, field = key.split("/")
            state.setdefault(name, {})[field] = value
    for key, value in meta["scalars"].items():
        name, field = key.split("/")
        state.setdefault(name, {})[field] = value
    return {"state": state, "param_groups": saved}


def save_checkpoint(
    directory: Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    step: int,
    history: dict[str, Any],
) -> Path | None:
    """Write `directory/checkpoint.safetensors` atomically; return its path. Under
    torch.distributed every rank calls this (a model sharded by FSDP is gathered whole) and
    rank 0 writes; the others return None."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    weights, optimizer_state = get_state_dict(model, optimizer, options=options)
    if not ranks.main():
        return None
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {
        f"model.{k}": cast(torch.Tensor, v).detach().contiguous() for k, v in weights.items()
    }
    optim_tensors, optim_meta = _flatten_optimizer(optimizer_state)
    tensors |= optim_tensors
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # this process's GPU
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    numpy_state = cast(tuple[Any, ...], np.random.get_state(legacy=True))
    meta = {
        "step": step,
        "optimizer": optim_meta,
        "schedule": schedule.state_dict(),  # its lr_lambdas are None: plain functions
        "rng_python": random.getstate(),
        "rng_numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
        "history": history,
    }
    path = directory / CHECKPOINT_FILE
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=f".{CHECKPOINT_FILE}.")
    os.close(handle)
    try:
        save_file(tensors, temporary, metadata={"omnifuse": json.dumps(meta)})
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(
    directory: Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
) -> tuple[int, dict[str, Any]]:
    """Restore model, optimizer, scheduler and RNG states; return (step, history)."""
    path = directory / CHECKPOINT_FILE
    if not path.is_file():
        raise OmnifuseError(f"{directory}: no {CHECKPOINT_FILE} to resume from")
    try:
        with safe_open(str(path), framework="pt") as file:
            meta = json.loads((file.metadata() or {})["omnifuse"])
        tensors = load_file(str(path))
    except (SafetensorError, KeyError, json.JSONDecodeError, OSError) as error:
        raise OmnifuseError(f"{path}: not a readable omnifuse checkpoint ({error})") from None
    weights = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    expected = set(model.state_dict())
    missing, unexpected = expected - set(weights), set(weights) - expected
    if missing or unexpected:
        raise OmnifuseError(
            f"{path}: the checkpoint does not match this run's model "
            f"(missing {len(missing)}, unexpected {len(unexpected)} weights)"
        )
    try:
        state = _unflatten_optimizer(
            tensors, meta["optimizer"], _parameter_groups(model, optimizer)
        )
    except KeyError as error:
        raise OmnifuseError(
            f"{path}: the optimizer state does not match this model: {error}"
        ) from None
    options = StateDictOptions(full_state_dict=True)  # whole on every rank; FSDP shards it
    set_state_dict(
        model,
        optimizer,
        model_state_dict=cast(dict[str, Any], weights),
        optim_state_dict=state,
        options=options,
    )
    schedule.load_state_dict(meta["schedule"])
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    version, values, gauss = meta["rng_python"]
    random.setstate((version, tuple(values), gauss))
    name, keys, *rest = meta["rng_numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))
    return int(meta["step"]), meta["history"]
