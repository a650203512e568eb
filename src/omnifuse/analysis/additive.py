"""The information about Y that no additive combination of two sources' evidence recovers:
what late fusion, which averages per-modality logits, cannot model.

A late fusion predicts p(y | x1, x2) ∝ exp(a(x1, y) + b(x2, y)). The best such predictor of
a joint p[x1, x2, y] (in expected log-loss) is the maximum-likelihood fit of the log-linear
model with margins [X1 X2] [X1 Y] [X2 Y] (no three-way interaction), which iterative
proportional fitting finds (Deming and Stephan 1940); its excess log-loss over the best
predictor p(y | x1, x2) is

    gap = KL(p || p_add) = I_p(X1, X2; Y) - I_p_add(X1, X2; Y)

in bits. p_add keeps p's (x1, y) and (x2, y) marginals, so it lies in the BROJA set Δp, whose
least informative member q* defines the synergy: I_p_add >= I_q*, hence gap <= synergy. The gap
is the part of the synergy that needs a fusion modelling interactions: 1 bit of XOR's 1, but 0
of AND's 0.5 bits and 0 for two observations independent given Y (the evidence adds up).

    late_fusion_gap(p)     # p[x1, x2, y], counts or probabilities
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from omnifuse.analysis.pid import normalised


def additive_fit(p: np.ndarray, *, iterations: int = 250, tolerance: float = 1e-7) -> np.ndarray:
    """p_add: the distribution of the form c(x1, x2) a(x1, y) b(x2, y) with p's three pairwise
    marginals, by iterative proportional fitting from the uniform distribution on the cells
    whose three marginals are positive. Where the fit lies on the boundary (a deterministic
    label) it is approached, not reached, and the loop stops after `iterations`."""
    p = normalised(p)
    p12, p1y, p2y = p.sum(2), p.sum(1), p.sum(0)
    q = ((p12[:, :, None] > 0) & (p1y[:, None, :] > 0) & (p2y[None, :, :] > 0)).astype(float)
    q /= q.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        for _ in range(iterations):
            q *= np.nan_to_num(p12 / q.sum(2))[:, :, None]
            q *= np.nan_to_num(p1y / q.sum(1))[:, None, :]
            q *= np.nan_to_num(p2y / q.sum(0))[None, :, :]
            if np.abs(q.sum(2) - p12).max() < tolerance:  # the last two hold exactly
                break
    return q / q.sum()


def late_fusion_gap(p: np.ndarray) -> float:
    """KL(p || p_add) in bits: the expected log-loss (bits) that the best additive predictor
    of Y from the two sources loses against the best predictor."""
    p = normalised(p)
    q = additive_fit(p)
    cells = p > 0
    return max(float((p[cells] * np.log2(p[cells] / q[cells])).sum()), 0.0)


@dataclass(frozen=True)
class GapTest:
    """The late-fusion gap of a sample against its sampling noise, in bits: `plugin` on the
    sample's histogram, `null` its mean over samples of the same size drawn from the additive
    fit (where the true gap is 0), `value` = plugin - null (at least 0) and `p_value`, the
    share of null draws at least as large as the plug-in (with the usual +1s)."""

    value: float
    plugin: float
    null: float
    p_value: float

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 6) for k, v in asdict(self).items()}


def gap_test(counts: np.ndarray, *, resamples: int = 200, seed: int = 0) -> GapTest:
    """The late-fusion gap of a histogram of counts (whole numbers of rows), tested by a
    parametric bootstrap of the likelihood-ratio test of no three-way interaction: the
    deviance 2 N ln 2 · gap is χ²-distributed only in well-filled tables, so the null is
    simulated instead. Each draw keeps every row's (x1, x2) and draws its label from the fitted
    additive model p_add(y | x1, x2): the gap is a conditional log-loss, and redrawing the
    sources too would leave fewer (x1, x2) cells occupied than the sample has, hence smaller
    gaps than sampling noise gives the sample itself."""
    counts = np.asarray(counts, dtype=np.float64)
    plugin = late_fusion_gap(counts)
    if resamples <= 0:
        return GapTest(plugin, plugin, 0.0, float("nan"))
    fit = additive_fit(counts)
    cells = counts.sum(2).ravel()  # rows per (x1, x2)
    occupied = np.flatnonzero(cells > 0)
    conditional = fit.reshape(-1, counts.shape[2])[occupied]
    conditional /= conditional.sum(1, keepdims=True)
    rows = np.rint(cells[occupied]).astype(np.int64)
    rng = np.random.default_rng(seed)
    null = np.empty(resamples)
    for b in range(resamples):
        draw = np.zeros((cells.size, counts.shape[2]))
        draw[occupied] = rng.multinomial(rows, conditional)
        null[b] = late_fusion_gap(draw.reshape(counts.shape))
    p_value = (1 + int((null >= plugin - 1e-12).sum())) / (resamples + 1)
    return GapTest(max(plugin - float(null.mean()), 0.0), plugin, float(null.mean()), p_value)
