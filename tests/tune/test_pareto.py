"""The Pareto front on hand-made points."""

from __future__ import annotations

from omnifuse.tune.pareto import dominates, pareto_front

OBJECTIVES = {"value": "max", "model_parameters": "min", "latency_ms": "min"}


def point(value: float, parameters: int, latency: float) -> dict[str, float]:
    return {"value": value, "model_parameters": parameters, "latency_ms": latency}


def test_dominance_needs_every_objective_at_least_as_good_and_one_better():
    a = point(0.9, 100, 1.0)
    assert dominates(a, point(0.8, 100, 1.0), OBJECTIVES)
    assert dominates(a, point(0.9, 200, 2.0), OBJECTIVES)
    assert not dominates(a, a, OBJECTIVES)
    assert not dominates(a, point(0.8, 50, 1.0), OBJECTIVES)  # the other is smaller
    assert not dominates(point(0.8, 100, 1.0), a, OBJECTIVES)


def test_the_front_keeps_exactly_the_undominated_points_best_first():
    points = [
        point(0.80, 1_000, 1.0),  # 0: cheapest: on the front
        point(0.95, 9_000, 3.0),  # 1: most accurate: on the front
        point(0.90, 5_000, 2.0),  # 2: between: on the front
        point(0.85, 6_000, 2.5),  # 3: dominated by 2
        point(0.90, 5_000, 2.5),  # 4: dominated by 2 (slower)
        point(0.70, 800, 4.0),  # 5: fewest parameters: on the front
        point(0.95, 9_000, 3.0),  # 6: equal to 1: only the first is kept
        point(0.60, 2_000, 0.5),  # 7: fastest: on the front
    ]
    assert pareto_front(points, OBJECTIVES) == [1, 2, 0, 5, 7]


def test_one_objective_gives_the_best_point_only():
    points = [{"value": v} for v in (0.2, 0.7, 0.5)]
    assert pareto_front(points, {"value": "max"}) == [1]
    assert pareto_front([], OBJECTIVES) == []
