"""Partial information decomposition of a label Y by two sources X1, X2 (Williams and Beer
2010), with the BROJA measure of Bertschinger, Rauh, Olbrich, Jost and Ay (2014), estimated as
Liang et al. do (NeurIPS 2023, the "CVX" estimator): on a discrete joint p(x1, x2, y), solve

    q* = argmin over Δp of I_q(X1, X2; Y),   Δp = {q : q(x1, y) = p(x1, y), q(x2, y) = p(x2, y)}

a convex problem (exponential cone, solved by Clarabel through cvxpy), then

    U1 = I_q*(X1, X2; Y) - I(X2; Y)      U2 = I_q*(X1, X2; Y) - I(X1; Y)
    R  = I(X1; Y) + I(X2; Y) - I_q*(X1, X2; Y)                 S = I_p(X1, X2; Y) - I_q*(X1, X2; Y)

so that R + U1 + U2 + S = I_p(X1, X2; Y), R + U1 = I(X1; Y) and R + U2 = I(X2; Y). Every
q in Δp has the same pairwise marginals with Y, hence the same I(X1; Y) and I(X2; Y).

    decomposition = decompose(p)        # p[x1, x2, y] >= 0, summing to 1; values in bits
    decomposition.synergy

The problem is written over the support that Δp allows: q(x1, x2, y) can be positive only
where p(x1, y) > 0 and p(x2, y) > 0, so zeros in p shrink the problem instead of sitting on the
boundary of the cone. The conditional entropy -H_q(Y | X1, X2) = Σ q log(q / q(x1, x2)) is a
sum of relative entropies `rel_entr(q, q12)` with q12 = Σ_y q its own variable, which keeps the
cone constraints sparse (about 0.1 s for 10 x 10 x 12 cells, 1-2 s for a dense 20 x 20 x 12).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import asdict, dataclass

import cvxpy as cp
import numpy as np
import scipy.sparse as sparse

from omnifuse.errors import OmnifuseError

logger = logging.getLogger(__name__)

PARTS = ("redundancy", "unique1", "unique2", "synergy")
SOLVERS = ("CLARABEL", "SCS")  # SCS only where Clarabel fails
# solver tolerance: components within this of zero (bits) are reported as zero
TOLERANCE = 1e-7


@dataclass(frozen=True)
class Decomposition:
    """The four parts of I(X1, X2; Y), in bits, and the two unimodal informations."""

    redundancy: float
    unique1: float
    unique2: float
    synergy: float
    information1: float  # I(X1; Y) = redundancy + unique1
    information2: float  # I(X2; Y) = redundancy + unique2

    @property
    def total(self) -> float:
        """I(X1, X2; Y), the sum of the four parts."""
        return self.redundancy + self.unique1 + self.unique2 + self.synergy

    def parts(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in PARTS}

    def as_dict(self) -> dict[str, float]:
        return asdict(self) | {"total": self.total}


def entropy(p: np.ndarray) -> float:
    """Shannon entropy in bits of the probabilities in `p` (any shape; zeros count nothing)."""
    nonzero = p[p > 0]
    return float(-(nonzero * np.log2(nonzero)).sum())


def mutual_information(pxy: np.ndarray) -> float:
    """I(X; Y) in bits of a 2-d joint p[x, y]."""
    return max(entropy(pxy.sum(1)) + entropy(pxy.sum(0)) - entropy(pxy), 0.0)


def joint_information(p: np.ndarray) -> float:
    """I(X1, X2; Y) in bits of p[x1, x2, y]."""
    return mutual_information(p.reshape(-1, p.shape[2]))


def normalised(p: np.ndarray) -> np.ndarray:
    """`p` as float64 summing to 1, or a one-line error for what cannot be a distribution."""
    p = np.asarray(p, dtype=np.float64)
    if p.ndim != 3:
        raise OmnifuseError(f"a joint distribution p[x1, x2, y] has 3 axes, not {p.ndim}")
    if not np.isfinite(p).all() or (p < 0).any() or p.sum() <= 0:
        raise OmnifuseError("a joint distribution needs finite, non-negative values, not all 0")
    return p / p.sum()


def decompose(p: np.ndarray) -> Decomposition:
    """The BROJA decomposition of p[x1, x2, y] (counts or probabilities), in bits."""
    p = normalised(p)
    # values of any variable that never occur take no part in anything
    p = p[p.sum((1, 2)) > 0][:, p.sum((0, 2)) > 0][:, :, p.sum((0, 1)) > 0]
    information1 = mutual_information(p.sum(1))
    information2 = mutual_information(p.sum(0))
    total = joint_information(p)
    # a constant source or label leaves p alone in Δp; otherwise p is one member of Δp
    least = total if min(p.shape) == 1 else min(joint_information(least_informative(p)), total)
    least = max(least, information1, information2)  # I_q(X1, X2; Y) >= I(Xi; Y) for every q
    values = {
        "redundancy": information1 + information2 - least,
        "unique1": least - information2,
        "unique2": least - information1,
        "synergy": total - least,
    }
    values = {k: 0.0 if abs(v) < TOLERANCE else max(v, 0.0) for k, v in values.items()}
    return Decomposition(**values, information1=information1, information2=information2)


def least_informative(p: np.ndarray) -> np.ndarray:
    """q* = argmin over q in Δp of I_q(X1, X2; Y), shaped like p (which sums to 1)."""
    k1, k2, ky = p.shape
    p1y, p2y = p.sum(1), p.sum(0)  # (k1, ky), (k2, ky): what every q in Δp keeps
    cells = np.flatnonzero((p1y[:, None, :] > 0) & (p2y[None, :, :] > 0))
    x1, x2, y = np.unravel_index(cells, p.shape)
    n = cells.size
    columns = np.arange(n)
    ones = np.ones(n)
    # each cell's (x1, y) row, (x2, y) row and (x1, x2) pair
    by1 = sparse.csr_matrix((ones, (x1 * ky + y, columns)), shape=(k1 * ky, n))
    by2 = sparse.csr_matrix((ones, (x2 * ky + y, columns)), shape=(k2 * ky, n))
    pair = sparse.csr_matrix((ones, (columns, x1 * k2 + x2)), shape=(n, k1 * k2))
    keep1 = np.flatnonzero(p1y.ravel() > 0)
    # the (x2, y) rows restate p(y), which the (x1, y) rows already fix: leaving out each y's
    # last (x2, y) row gives the equality constraints full rank
    rows2 = np.flatnonzero(p2y.ravel() > 0)
    last = {int(row) % ky: int(row) for row in rows2}
    keep2 = np.setdiff1d(rows2, list(last.values()))
    q = cp.Variable(n, nonneg=True)
    q12 = cp.Variable(k1 * k2, nonneg=True)
    constraints = [
        by1[keep1] @ q == p1y.ravel()[keep1],
        pair.T @ q == q12,
    ]
    if keep2.size:
        constraints.append(by2[keep2] @ q == p2y.ravel()[keep2])
    # Σ q log(q / q12) = -H_q(Y | X1, X2), in nats
    problem = cp.Problem(cp.Minimize(cp.sum(cp.rel_entr(q, pair @ q12))), constraints)
    _solve(problem)
    solution = np.asarray(q.value, dtype=np.float64)
    least = np.zeros(p.size)
    least[cells] = np.clip(solution, 0.0, None)
    return least.reshape(p.shape) / least.sum()


def _solve(problem: cp.Problem) -> None:
    """Solve with the first solver that reaches an optimum, to full accuracy or to its reduced
    tolerances (Clarabel's "almost solved", about 1e-5 bits here, which cvxpy would warn
    about: the status is checked here instead)."""
    for solver in SOLVERS:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                problem.solve(solver=solver)
        except cp.error.SolverError as error:
            logger.debug("%s failed: %s", solver, error)
            continue
        if problem.status in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE):
            return
        logger.debug("%s ended %s", solver, problem.status)
    raise OmnifuseError(f"the PID's convex problem was not solved (status {problem.status})")
