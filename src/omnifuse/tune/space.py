"""The search space of `omnifuse tune`: the fusion strategy, its size, depth and options,
modality dropout and the learning rate. A trial's choices become `--set`-style overrides of
the base config, so a trial is a config `omnifuse train` takes.

    space = SearchSpace(fusions=("early", "late", "perceiver"))
    params = space.suggest(trial)      # {"fusion": "perceiver", "fusion_parameters": 61234, ...}
    space.overrides(params)            # ['model.fusion={"type": "perceiver", ...}', ...]

A strategy's size is searched as its parameter count (`budget`, which picks the width whose
count is closest, `fusion/base.py`), not its width: widths mean different things to
different strategies (a tensor fusion's parameters grow as (width + 1) ** modalities), a
parameter count means the same to all. The depth, and the options below, are searched for
the strategies that take them, each under its own name (`perceiver.depth`), since the best
depth of one strategy says little about another's.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import optuna

from omnifuse.config import RunConfig
from omnifuse.errors import ConfigError
from omnifuse.registry import FUSIONS, closest, list_fusions

# per-strategy options searched besides the depth, where the registered builder takes them:
# option -> its choices
OPTIONS: dict[str, dict[str, tuple[Any, ...]]] = {
    "perceiver": {"latents": (8, 16, 32)},
    "bottleneck": {"bottleneck": (2, 4, 8)},
    "low_rank": {"rank": (2, 4, 8, 16)},
    "late": {"combine": ("mean", "learned")},
}
FAMILIES = ("late", "interaction")  # what an analysis may recommend
DROPOUT_STEP = 0.05


def searchable_fusions() -> list[str]:
    """Every registered strategy but `unimodal` (a baseline reading one modality)."""
    return [name for name in list_fusions() if name != "unimodal"]


@dataclass(frozen=True)
class SearchSpace:
    """What a search varies, and over which ranges (inclusive): the strategies, their fusion
    parameter count (log scale), depth (where a strategy has one), modality dropout and the
    learning rate (log scale)."""

    fusions: tuple[str, ...] = field(default_factory=lambda: tuple(searchable_fusions()))
    fusion_parameters: tuple[int, int] = (20_000, 300_000)
    depth: tuple[int, int] = (1, 3)
    modality_dropout: tuple[float, float] = (0.0, 0.5)
    lr: tuple[float, float] = (5e-4, 1e-2)

    def __post_init__(self) -> None:
        known = searchable_fusions()
        if not self.fusions:
            raise ConfigError("tune --fusions: name at least one strategy")
        for name in self.fusions:
            if name not in known:
                raise ConfigError(
                    f"tune --fusions: unknown fusion '{name}'{closest(name, known)}; "
                    f"known: {', '.join(known)}"
                )
        for option, (low, high) in (
            ("--fusion-parameters", self.fusion_parameters),
            ("--lr", self.lr),
        ):
            if not 0 < low <= high:
                raise ConfigError(f"tune {option}: expected 0 < MIN <= MAX, got {low}:{high}")

    def describe(self) -> dict[str, Any]:
        """The space as JSON: part of what identifies a search."""
        return asdict(self)

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """A trial's choices, drawn by its sampler (or fixed by an enqueued trial)."""
        fusion = trial.suggest_categorical("fusion", self.fusions)
        options = FUSIONS.options(fusion)
        params: dict[str, Any] = {"fusion": fusion}
        if "budget" in options:
            low, high = self.fusion_parameters
            params["fusion_parameters"] = trial.suggest_int(
                "fusion_parameters", low, high, log=True
            )
        if "depth" in options:
            params[f"{fusion}.depth"] = trial.suggest_int(f"{fusion}.depth", *self.depth)
        for option, choices in OPTIONS.get(fusion, {}).items():
            if option in options:
                params[f"{fusion}.{option}"] = trial.suggest_categorical(
                    f"{fusion}.{option}", choices
                )
        params["modality_dropout"] = trial.suggest_float(
            "modality_dropout", *self.modality_dropout, step=DROPOUT_STEP
        )
        params["lr"] = trial.suggest_float("lr", *self.lr, log=True)
        return params

    @staticmethod
    def overrides(params: dict[str, Any]) -> list[str]:
        """The `key.path=value` overrides that make the base config a trial's config."""
        fusion = params["fusion"]
        component: dict[str, Any] = {"type": fusion}
        if "fusion_parameters" in params:
            component["budget"] = params["fusion_parameters"]
        prefix = f"{fusion}."
        component |= {k.removeprefix(prefix): v for k, v in params.items() if k.startswith(prefix)}
        return [
            f"model.fusion={json.dumps(component)}",
            f"model.modality_dropout={params['modality_dropout']!r}",
            f"train.lr={params['lr']!r}",
        ]


def parse_range(text: str, option: str, kind: type[int] | type[float]) -> tuple[Any, Any]:
    """`MIN:MAX` (or one value, for a fixed one) as a pair of `kind`."""
    low, sep, high = text.partition(":")
    try:
        pair = (kind(float(low)), kind(float(high if sep else low)))
    except ValueError:
        raise ConfigError(f"tune {option}: expected MIN:MAX or one number, got '{text}'") from None
    if not all(math.isfinite(v) for v in pair):
        raise ConfigError(f"tune {option}: expected finite numbers, got '{text}'")
    return pair


def read_recommendation(path: Path, space: SearchSpace) -> dict[str, Any]:
    """The recommendation of an `omnifuse analyze` analysis.json: {"family", "fusions",
    "why"}, keeping only the fusions in `space` (in their order of preference). Anything
    malformed is one ConfigError line naming the file."""
    try:
        data = json.loads(path.read_text())
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the analysis: {error.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: not valid JSON: {str(error).splitlines()[0]}") from None
    recommendation = data.get("recommendation") if isinstance(data, dict) else None
    if not isinstance(recommendation, dict):
        raise ConfigError(f"{path}: no 'recommendation' mapping; is it an analysis.json?")
    family, fusions = recommendation.get("family"), recommendation.get("fusions")
    if family not in FAMILIES:
        raise ConfigError(
            f"{path}: recommendation.family: expected one of {', '.join(FAMILIES)}, got {family!r}"
        )
    if not isinstance(fusions, list) or not fusions or not all(isinstance(f, str) for f in fusions):
        raise ConfigError(f"{path}: recommendation.fusions: expected a non-empty list of names")
    kept = [f for f in dict.fromkeys(fusions) if f in space.fusions]
    if not kept:
        raise ConfigError(
            f"{path}: none of the recommended fusions ({', '.join(fusions)}) is in the search "
            f"space ({', '.join(space.fusions)})"
        )
    return {"family": family, "fusions": kept, "why": str(recommendation.get("why", ""))}


def first_trials(
    fusions: Sequence[str], space: SearchSpace, base: RunConfig
) -> list[dict[str, Any]]:
    """The partial choices to enqueue so that the search starts with these strategies, one
    trial each, at the base config's learning rate and modality dropout (where the space
    holds them); the sampler draws each one's size, depth and options."""
    fixed: dict[str, Any] = {}
    if space.lr[0] <= base.train.lr <= space.lr[1]:
        fixed["lr"] = base.train.lr
    low, high = space.modality_dropout
    dropout = base.model.modality_dropout
    if low <= dropout <= high and math.isclose(
        dropout / DROPOUT_STEP, round(dropout / DROPOUT_STEP)
    ):
        fixed["modality_dropout"] = dropout
    return [{"fusion": name, **fixed} for name in fusions]
