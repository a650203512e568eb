"""Training checkpoints: one safetensors file holding the model, optimizer and RNG tensors,
with the step, scheduler, Python/NumPy RNG states and history as JSON metadata. Written
atomically (temporary file, then rename); loaded without pickle.
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

from omnifuse.errors import OmnifuseError

CHECKPOINT_FILE = "checkpoint.safetensors"


def _parameter_names(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """The model's name for each parameter, in the optimizer's (index) order."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [names[id(p)] for group in optimizer.param_groups for p in group["params"]]


def _flatten_optimizer(
    state: dict[str, Any], names: list[str]
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Optimizer state as tensors keyed `optim/<parameter name>/<field>`, plus its JSON-able
    rest; keyed by name, not position, so a mismatch is caught instead of misapplied."""
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for field, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim/{names[index]}/{field}"] = value.detach().contiguous()
            else:
                scalars[f"{names[index]}/{field}"] = value
    groups = [{**g, "params": [names[i] for i in g["params"]]} for g in state["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def _unflatten_optimizer(
    tensors: dict[str, torch.Tensor], meta: dict[str, Any], names: list[str], sizes: list[int]
) -> dict[str, Any]:
    """The optimizer state dict for the current parameter order. `sizes` are the current
    groups' lengths; torch pairs a saved group's params with the current group's by position,
    so each group lists the current indices in the current order."""
    index = {name: i for i, name in enumerate(names)}
    starts = [sum(sizes[:g]) for g in range(len(sizes))]
    current = [names[start : start + size] for start, size in zip(starts, sizes, strict=True)]
    saved = meta["param_groups"]
    if len(saved) != len(current) or any(
        set(g["params"]) != set(c) for g, c in zip(saved, current, strict=False)
    ):
        raise KeyError("the parameters differ")
    groups = [{**g, "params": [index[n] for n in c]} for g, c in zip(saved, current, strict=True)]
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim/"):
            _, name, field = key.split("/")
            state.setdefault(index[name], {})[field] = value
    for key, value in meta["scalars"].items():
        name, field = key.split("/")
        state.setdefault(index[name], {})[field] = value
    return {"state": state, "param_groups": groups}


def save_checkpoint(
    directory: Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    step: int,
    history: dict[str, Any],
) -> Path:
    """Write `directory/checkpoint.safetensors` atomically; return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
    names = _parameter_names(model, optimizer)
    optim_tensors, optim_meta = _flatten_optimizer(optimizer.state_dict(), names)
    tensors |= optim_tensors
    tensors["rng.torch"] = torch.get_rng_state()
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
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise OmnifuseError(
            f"{path}: the checkpoint does not match this run's model "
            f"(missing {len(missing)}, unexpected {len(unexpected)} weights)"
        )
    names = _parameter_names(model, optimizer)
    try:
        sizes = [len(group["params"]) for group in optimizer.param_groups]
        state = _unflatten_optimizer(tensors, meta["optimizer"], names, sizes)
        optimizer.load_state_dict(state)
    except (KeyError, ValueError) as error:
        raise OmnifuseError(
            f"{path}: the optimizer state does not match this model: {error}"
        ) from None
    schedule.load_state_dict(meta["schedule"])
    torch.set_rng_state(tensors["rng.torch"])
    version, values, gauss = meta["rng_python"]
    random.setstate((version, tuple(values), gauss))
    name, keys, *rest = meta["rng_numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))
    return int(meta["step"]), meta["history"]
