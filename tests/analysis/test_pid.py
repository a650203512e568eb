"""The BROJA estimator: tiny distributions with known decompositions, the identities every
decomposition satisfies, the optimum it finds, and agreement with `dit` where both apply."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest

from omnifuse.analysis.pid import (
    decompose,
    joint_information,
    least_informative,
    mutual_information,
)
from omnifuse.errors import OmnifuseError

TOLERANCE = 1e-6  # bits: Clarabel's default tolerances give about 1e-8 on these


def table(rule, x1: int = 2, x2: int = 2) -> np.ndarray:
    """p[x1, x2, y] with X1, X2 independent and uniform and Y = rule(x1, x2)."""
    outcomes = [(a, b, rule(a, b)) for a in range(x1) for b in range(x2)]
    p = np.zeros((x1, x2, 1 + max(y for *_, y in outcomes)))
    for cell in outcomes:
        p[cell] += 1 / len(outcomes)
    return p


def parts(p: np.ndarray) -> list[float]:
    d = decompose(p)
    return [d.redundancy, d.unique1, d.unique2, d.synergy]


def copied_bit() -> np.ndarray:
    """X1 = X2 = Y, one uniform bit copied into both sources."""
    p = np.zeros((2, 2, 2))
    p[0, 0, 0] = p[1, 1, 1] = 0.5
    return p


# name -> (p, [redundancy, unique1, unique2, synergy]) in bits
KNOWN = {
    "copied bit": (copied_bit(), [1, 0, 0, 0]),
    "xor": (table(lambda a, b: a ^ b), [0, 0, 0, 1]),
    "independent bits": (table(lambda a, b: 2 * a + b), [0, 1, 1, 0]),
    "and": (table(lambda a, b: a & b), [0.311278, 0, 0, 0.5]),
    "unique to the first": (table(lambda a, b: a), [0, 1, 0, 0]),
    "xor of two of three": (table(lambda a, b: (a + b) % 3, 3, 3), [0, 0, 0, np.log2(3)]),
}


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_known_decompositions(name: str):
    p, expected = KNOWN[name]
    assert parts(p) == pytest.approx(expected, abs=TOLERANCE)


def test_and_redundancy_is_the_known_closed_form():
    # BROJA's AND: R = I(X1; Y) = h(1/4) - 1/2 = 0.311278 bits (Bertschinger et al. 2014)
    h = -(0.25 * np.log2(0.25) + 0.75 * np.log2(0.75))
    assert decompose(KNOWN["and"][0]).redundancy == pytest.approx(h - 0.5, abs=TOLERANCE)


def random_tables(count: int, seed: int, zeros: float = 0.2) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    found = []
    for _ in range(count):
        shape = tuple(int(s) for s in rng.integers(2, 5, 3))
        p = rng.dirichlet(np.ones(int(np.prod(shape)))).reshape(shape)
        p[rng.random(shape) < zeros] = 0
        found.append(p / p.sum())
    return found


@pytest.mark.parametrize("p", random_tables(6, seed=3), ids=lambda p: "x".join(map(str, p.shape)))
def test_the_parts_sum_to_the_informations(p: np.ndarray):
    d = decompose(p)
    assert min(parts(p)) >= 0
    assert d.total == pytest.approx(joint_information(p), abs=TOLERANCE)
    assert d.redundancy + d.unique1 == pytest.approx(mutual_information(p.sum(1)), abs=TOLERANCE)
    assert d.redundancy + d.unique2 == pytest.approx(mutual_information(p.sum(0)), abs=TOLERANCE)


def test_the_least_informative_member_keeps_the_marginals_and_is_a_minimum():
    """q* lies in Δp, and no member of Δp found by other means is less informative: p itself,
    the conditionally independent member p(y) p(x1|y) p(x2|y), and feasible steps from q*
    along the null space of the marginal constraints."""
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(3 * 4 * 3)).reshape(3, 4, 3)
    q = least_informative(p)
    assert q.sum(1) == pytest.approx(p.sum(1), abs=1e-7)
    assert q.sum(0) == pytest.approx(p.sum(0), abs=1e-7)
    least = joint_information(q)
    py = p.sum((0, 1))
    independent = p.sum(1)[:, None, :] * p.sum(0)[None, :, :] / py
    assert least <= joint_information(p) + 1e-9
    assert least <= joint_information(independent) + 1e-9
    # directions that keep both marginals: the null space of the constraint matrix
    rows = []
    for index in np.ndindex(3, 3):
        rows.append(np.zeros(p.shape))
        rows[-1][index[0], :, index[1]] = 1
    for index in np.ndindex(4, 3):
        rows.append(np.zeros(p.shape))
        rows[-1][:, index[0], index[1]] = 1
    constraints = np.stack([r.ravel() for r in rows])
    null = np.linalg.svd(constraints)[2][np.linalg.matrix_rank(constraints) :]
    for direction in null[:10]:
        step = direction.reshape(p.shape)
        for sign in (1, -1):
            scale = 1e-3
            moved = q + sign * scale * step
            if moved.min() >= 0:
                assert joint_information(moved) >= least - 1e-7


def test_zeros_constant_sources_and_counts():
    # a label no source tells anything about, with an empty row and an empty class
    p = np.zeros((3, 2, 3))
    p[0, 0, 0] = p[0, 1, 0] = p[1, 0, 1] = p[1, 1, 1] = 0.25
    d = decompose(p * 40)  # counts are normalised
    assert parts(p) == pytest.approx([0, 1, 0, 0], abs=TOLERANCE)
    assert d.total == pytest.approx(1.0, abs=TOLERANCE)
    constant = np.zeros((1, 2, 2))
    constant[0, 0, 0] = constant[0, 1, 1] = 0.5  # X1 constant: everything is unique to X2
    assert parts(constant) == pytest.approx([0, 0, 1, 0], abs=TOLERANCE)


@pytest.mark.parametrize(
    "bad", [np.zeros((2, 2, 2)), -np.ones((2, 2, 2)), np.ones((2, 2)), np.full((2, 2, 2), np.nan)]
)
def test_what_is_not_a_distribution_is_one_line(bad: np.ndarray):
    with pytest.raises(OmnifuseError):
        decompose(bad)


def to_dit(p: np.ndarray):
    import dit

    outcomes, probabilities = [], []
    for index in itertools.product(*map(range, p.shape)):
        if p[index] > 0:
            outcomes.append("".join(str(i) for i in index))
            probabilities.append(p[index])
    return dit.Distribution(outcomes, probabilities)


def dit_parts(p: np.ndarray, method: str, maxiter: int = 1000) -> list[float]:
    from dit.pid import PID_BROJA

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = PID_BROJA(to_dit(p), method=method, maxiter=maxiter)
    atoms = [((0,), (1,)), ((0,),), ((1,),), ((0, 1),)]
    return [float(reference.get_pi(atom)) for atom in atoms]


def small_tables(count: int, seed: int) -> list[np.ndarray]:
    """Random distributions of at most 12 cells (dit's admui solver takes seconds beyond)."""
    rng = np.random.default_rng(seed)
    shapes = [(2, 2, 2), (2, 2, 3), (3, 2, 2), (2, 3, 2), (3, 2, 2)]
    found = []
    for shape in shapes[:count]:
        p = rng.dirichlet(np.ones(int(np.prod(shape)))).reshape(shape)
        p[rng.random(shape) < 0.15] = 0
        found.append(p / p.sum())
    return found


# bits: dit's alternating divergence minimisation (admui) and Clarabel meet to within 2e-6 on
# these (admui run to 20000 iterations on the random ones: at its default 1000 it can stop
# 2e-3 short of the minimum)
DIT_TOLERANCE = 1e-5


@pytest.mark.parametrize("p", small_tables(5, seed=11), ids=lambda p: "x".join(map(str, p.shape)))
def test_agrees_with_dit_on_random_distributions(p: np.ndarray):
    pytest.importorskip("dit")
    assert parts(p) == pytest.approx(dit_parts(p, "admui", maxiter=20000), abs=DIT_TOLERANCE)


@pytest.mark.slow  # dit's solver takes 15 s on it
def test_never_a_worse_minimum_than_dit():
    """Where dit's admui has not converged (this 3 x 4 x 3 table: 0.15 bit off after 1000
    iterations, 0.05 after 20000 and 74 s), its minimum of I_q(X1, X2; Y) is higher than
    ours, which is the one that lies lower in the same convex set."""
    pytest.importorskip("dit")
    p = random_tables(6, seed=11)[5]
    assert p.shape == (3, 4, 3)
    ours, theirs = parts(p), dit_parts(p, "admui")
    total = joint_information(p)
    assert total - ours[3] < total - theirs[3] - 0.01  # I_q* = total - synergy
    q = least_informative(p)  # and ours is in Δp
    assert q.sum(1) == pytest.approx(p.sum(1), abs=1e-7)
    assert q.sum(0) == pytest.approx(p.sum(0), abs=1e-7)


@pytest.mark.parametrize(
    "name", ["and", "rdn xor", "boom", "prob. 2", "sum", "diff", "cat", "unique 1", "synergy"]
)
def test_agrees_with_dits_bivariate_examples(name: str):
    dit = pytest.importorskip("dit")
    d = dit.pid.distributions.bivariates[name]
    d.make_dense()
    alphabet = [sorted(a) for a in d.alphabet]
    p = np.zeros([len(a) for a in alphabet])
    for outcome, probability in d.zipped():
        p[tuple(alphabet[i].index(outcome[i]) for i in range(3))] += probability
    assert parts(p) == pytest.approx(dit_parts(p, "admui"), abs=DIT_TOLERANCE)


def test_finds_a_lower_minimum_where_dits_default_solver_stops_short():
    """dit's `W` example: Y = 1 exactly when X1 = X2 = 0, X1 = X2 = 1 never occurs. In Δp,
    q(·, ·, 0) = [[a, 1/3 - a], [1/3 - a, a]] and q(0, 0, 1) = 1/3, so H_q(Y | X1, X2) is
    largest at a = 1/3 (2/3 bit): min I_q = h(1/3) - 2/3 and S = 2/3 bit. dit's default
    (scipy) solver stays at q = p and returns a negative redundancy."""
    p = np.zeros((2, 2, 2))
    p[0, 0, 1] = p[0, 1, 0] = p[1, 0, 0] = 1 / 3
    h = -(np.log2(1 / 3) / 3 + 2 / 3 * np.log2(2 / 3))
    assert parts(p) == pytest.approx([h - 2 / 3, 0, 0, 2 / 3], abs=TOLERANCE)
