"""The one interface of every fusion strategy: per-modality tokens in, one fused result out.

Shared helpers for the strategies: presence per sample, the learned absent embedding, the
width that meets a parameter budget.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from omnifuse.errors import ConfigError
from omnifuse.interfaces import Fused, Tokens
from omnifuse.layers.attention import masked_mean
from omnifuse.registry import closest

log = logging.getLogger(__name__)


def vector(pooled: Tensor) -> Fused:
    """A fused vector (B, D) as a single always-valid token."""
    mask = torch.ones(pooled.shape[0], 1, dtype=torch.bool, device=pooled.device)
    return Fused(pooled[:, None], mask, pooled)


def batch_size(inputs: Mapping[str, Tokens]) -> int:
    return next(iter(inputs.values())).tokens.shape[0]


def present(tokens: Tokens) -> Tensor:
    """(B,) True where the sample has at least one valid token of this modality."""
    return tokens.mask.any(dim=-1)


def zero_masked(tokens: Tensor, mask: Tensor) -> Tensor:
    """Masked positions set to exactly zero, so that nothing downstream can read them."""
    return tokens * mask[..., None].to(tokens.dtype)


def pooled_or_absent(tokens: Tokens, absent: Tensor) -> Tensor:
    """Masked mean of a modality's tokens, (B, D); `absent` (D,) where the sample has none."""
    mean = masked_mean(tokens.tokens, tokens.mask)
    return torch.where(present(tokens)[:, None], mean, absent.expand_as(mean))


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def sized(
    build: Callable[[int], nn.Module],
    *,
    width: int | None,
    budget: int | None,
    default: int,
) -> nn.Module:
    """`build(width)`, where the width is given, or the default, or, with `budget`, the one
    whose parameter count is closest to the budget (counted on the meta device: no memory,
    no change to torch's random state). Every strategy keeps the width it was built with as
    its `width` attribute."""
    if width is not None and budget is not None:
        raise ConfigError("model.fusion: set 'width' or 'budget', not both")
    if width is not None and width < 1:
        raise ConfigError(f"model.fusion.width: must be at least 1, got {width}")
    if budget is not None:
        width = width_for_budget(build, budget)
    return build(default if width is None else width)


def width_for_budget(build: Callable[[int], nn.Module], budget: int) -> int:
    """The width w >= 1 whose `build(w)` has the parameter count closest to `budget`
    (counts grow with the width; ties go to the smaller width)."""

    def count(w: int) -> int:
        with torch.device("meta"):
            return count_parameters(build(w))

    high = 1
    while count(high) < budget:
        high *= 2
        if high > 1 << 20:
            break
    low = max(1, high // 2)
    while low < high:  # smallest width reaching the budget
        middle = (low + high) // 2
        if count(middle) < budget:
            low = middle + 1
        else:
            high = middle
    if low > 1 and budget - count(low - 1) <= count(low) - budget:
        return low - 1
    if low == 1 and count(1) > budget:
        log.warning("fusion budget %d is below its smallest size, %d at width 1", budget, count(1))
    return low


def require_modality(name: str | None, modalities: Sequence[str], option: str) -> str:
    """A modality option checked against the config's modalities; the only one when unset."""
    names = sorted(modalities)
    if name is None:
        if len(names) == 1:
            return names[0]
        raise ConfigError(
            f"model.fusion.{option}: required with several modalities; one of {', '.join(names)}"
        )
    if name not in names:
        raise ConfigError(
            f"model.fusion.{option}: unknown modality '{name}'{closest(name, names)}; "
            f"the config defines {', '.join(names)}"
        )
    return name
