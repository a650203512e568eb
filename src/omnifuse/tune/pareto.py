"""The Pareto front of a search's trials: those no other trial beats on every objective at
once (validation accuracy up, parameters and inference latency down).

    front = pareto_front(records, OBJECTIVES)      # indices into records, best value first
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

Sense = Literal["max", "min"]
OBJECTIVES: dict[str, Sense] = {"value": "max", "model_parameters": "min", "latency_ms": "min"}


def dominates(a: Mapping[str, Any], b: Mapping[str, Any], objectives: Mapping[str, Sense]) -> bool:
    """Whether `a` is at least as good as `b` on every objective and better on one."""
    better = False
    for key, sense in objectives.items():
        x, y = (a[key], b[key]) if sense == "max" else (-a[key], -b[key])
        if x < y:
            return False
        better = better or x > y
    return better


def pareto_front(
    points: Sequence[Mapping[str, Any]], objectives: Mapping[str, Sense] = OBJECTIVES
) -> list[int]:
    """The indices of the points that no other point dominates, ordered by the first
    objective (best first), then by the others; of points equal on every objective, the
    first is kept."""
    front: list[int] = []
    for i, point in enumerate(points):
        if any(dominates(other, point, objectives) for other in points):
            continue
        if any(all(points[j][k] == point[k] for k in objectives) for j in front):
            continue
        front.append(i)

    def order(i: int) -> tuple[float, ...]:
        return tuple(-points[i][k] if s == "max" else points[i][k] for k, s in objectives.items())

    return sorted(front, key=order)
