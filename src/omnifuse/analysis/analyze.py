"""`omnifuse analyze`: for a classification target and each pair of modalities, the partial
information decomposition of the label (redundancy, uniqueness of each, synergy) with
bootstrap intervals, the late-fusion gap, and the fusion family that the profile recommends.

    analysis = analyze(load_config("world.yaml"), target="synergy")
    analysis.recommendation.family       # "late" or "interaction"
    analysis.as_dict()                   # what analysis.json holds

Each modality's embedding (its encoder's pooled tokens, `sources`) is standardised and
clustered by k-means on the training rows; the held-out rows' cluster codes and labels make
one histogram per pair, decomposed by the BROJA estimator (`pid`) with basic bootstrap
intervals (`discretise.bootstrap`), and the information no additive combination of the two
recovers is tested against its sampling noise (`additive.gap_test`).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from omnifuse.analysis.additive import gap_test
from omnifuse.analysis.discretise import assign, bootstrap, kmeans
from omnifuse.analysis.embeddings import Embedding
from omnifuse.analysis.pid import entropy
from omnifuse.analysis.profile import PairProfile
from omnifuse.analysis.recommend import Recommendation, recommend
from omnifuse.analysis.sources import (
    Embedded,
    Target,
    load_saved,
    resolve_target,
    saved_encoders,
    train_encoders,
)
from omnifuse.config import RunConfig
from omnifuse.errors import ConfigError, OmnifuseError

logger = logging.getLogger(__name__)

FIT_ROWS = 20_000  # k-means is fitted on at most this many training rows (a seeded draw)
MIN_ROWS = 20  # a pair needs this many held-out rows with both modalities and a label


@dataclass
class Analysis:
    """Everything `omnifuse analyze` reports, in bits."""

    target: Target
    entropy: float  # H(Y) on the held-out rows
    pairs: list[PairProfile]
    recommendation: Recommendation
    settings: dict[str, Any]
    source: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": {
                "task": self.target.task,
                "column": self.target.column,
                "classes": self.target.classes,
                "entropy": round(self.entropy, 6),
            },
            "settings": self.settings,
            "pairs": [pair.as_dict() for pair in self.pairs],
            "recommendation": self.recommendation.as_dict(),
            "source": self.source,
            "seconds": round(self.seconds, 2),
        }


@dataclass(frozen=True)
class Settings:
    """How the profile is estimated: k-means clusters per modality, bootstrap resamples (for
    the intervals and the gap's null draws; 0: plug-in values only), the intervals' level and
    the seed of the clustering and the bootstrap."""

    clusters: int = 12
    resamples: int = 100
    level: float = 0.95
    seed: int = 0

    def check(self) -> Settings:
        if self.clusters < 2:
            raise ConfigError(f"--clusters {self.clusters}: at least 2")
        if self.resamples < 0:
            raise ConfigError(f"--resamples {self.resamples}: at least 0")
        if not 0 < self.level < 1:
            raise ConfigError(f"analyze: the interval level {self.level} must lie between 0 and 1")
        return self


def standardise(vectors: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """`vectors` with each dimension centred and scaled by `reference`'s mean and standard
    deviation, so that k-means weighs every dimension of the embedding alike."""
    return (vectors - reference.mean(0)) / (reference.std(0) + 1e-6)


def usable_clusters(clusters: int, rows: int, classes: int) -> int:
    """At most `clusters`, and few enough that a pair's histogram has no more cells than rows
    (k * k * classes <= rows): the plug-in synergy and late-fusion gap of sparser tables read
    high, and the gap's null draws no longer reproduce their noise (a world of 1,500 samples
    at 12 clusters, 300 held-out rows for 1,728 cells, showed a 0.22-bit gap on scene). At
    least 2."""
    return max(2, min(clusters, math.isqrt(rows // max(classes, 1))))


def cluster_codes(embedded: Embedded, clusters: int, seed: int) -> dict[str, np.ndarray]:
    """modality -> (N,) cluster code of each held-out row, -1 where the modality is absent:
    k-means on the standardised embeddings of (at most FIT_ROWS of) the training rows that
    have the modality."""
    codes = {}
    rng = np.random.default_rng(seed)
    for name, train in sorted(embedded.train.items()):
        reference = train.vectors[train.present]
        if len(reference) < 2:
            raise OmnifuseError(f"analyze: modality '{name}' is in fewer than 2 training rows")
        if len(reference) > FIT_ROWS:
            reference = reference[np.sort(rng.choice(len(reference), FIT_ROWS, replace=False))]
        centroids = kmeans(standardise(reference, reference), clusters, seed=seed)
        heldout: Embedding = embedded.heldout[name]
        code = assign(standardise(heldout.vectors, reference), centroids)
        codes[name] = np.where(heldout.present, code, -1)
    return codes


def profile_pairs(
    codes: dict[str, np.ndarray], labels: np.ndarray, settings: Settings, *, progress: bool = True
) -> list[PairProfile]:
    """The decomposition and the late-fusion gap for every pair of modalities, over the rows
    that have both and a label (pairs with fewer than MIN_ROWS are left out, with a warning)."""
    pairs = list(combinations(sorted(codes), 2))
    profiles = []
    for first, second in tqdm(pairs, desc="decomposing", disable=not progress, leave=False):
        rows = (codes[first] >= 0) & (codes[second] >= 0) & (labels >= 0)
        if rows.sum() < MIN_ROWS:
            logger.warning(
                "left out %s + %s: %d held-out rows have both and a label, fewer than %d",
                first, second, rows.sum(), MIN_ROWS,
            )  # fmt: skip
            continue
        c1, c2, y = _dense(codes[first][rows]), _dense(codes[second][rows]), labels[rows]
        resamples, seed = settings.resamples, settings.seed
        estimate = bootstrap(c1, c2, y, resamples=resamples, seed=seed, level=settings.level)
        counts = np.zeros((c1.max() + 1, c2.max() + 1, y.max() + 1))
        np.add.at(counts, (c1, c2, y), 1.0)
        gap = gap_test(counts, resamples=resamples, seed=seed)
        profiles.append(PairProfile((first, second), estimate, gap, cells=counts.size))
    if not profiles:
        raise OmnifuseError(
            f"analyze: no pair of modalities has {MIN_ROWS} held-out rows with both and a label"
        )
    return profiles


def _dense(codes: np.ndarray) -> np.ndarray:
    """Codes renumbered 0..k'-1 in order, leaving out those no row has."""
    return np.unique(codes, return_inverse=True)[1].astype(np.int64)


def profile(
    embedded: Embedded, target: str, settings: Settings | None = None, *, progress: bool = True
) -> Analysis:
    """The interaction profile of the classification task `target` from `embedded`."""
    settings = (settings or Settings()).check()
    if target not in embedded.targets:
        known = ", ".join(embedded.targets) or "none"
        raise ConfigError(f"analyze: '{target}' is not a classification task here ({known})")
    if len(embedded.heldout) < 2:
        raise ConfigError("analyze: the interactions between modalities need two or more")
    start = time.perf_counter()
    chosen = embedded.targets[target]
    labels = embedded.labels[target]
    counts = np.bincount(labels[labels >= 0], minlength=max(len(chosen.classes), 1))
    h = entropy(counts / max(counts.sum(), 1))
    present = {m: e.present & (labels >= 0) for m, e in embedded.heldout.items()}
    pairs_rows = [int((present[a] & present[b]).sum()) for a, b in combinations(present, 2)]
    fewest = min(pairs_rows)
    used = usable_clusters(settings.clusters, fewest, int((counts > 0).sum()))
    if used < settings.clusters:
        logger.info(
            "%d clusters per modality rather than %d: %d labelled held-out rows in the "
            "smallest pair, %d classes",
            used, settings.clusters, fewest, (counts > 0).sum(),
        )  # fmt: skip
    codes = cluster_codes(embedded, used, settings.seed)
    pairs = profile_pairs(codes, labels, settings, progress=progress)
    rows = {
        "clusters_used": used,
        "rows": "val+test",
        "heldout_rows": len(labels),
        "labelled_rows": int((labels >= 0).sum()),
    }
    return Analysis(
        target=chosen,
        entropy=h,
        pairs=pairs,
        recommendation=recommend(chosen.task, h, pairs),
        settings=asdict(settings) | rows,
        source=embedded.source,
        seconds=time.perf_counter() - start,
    )


def analyze(
    config: RunConfig | None = None,
    *,
    model: Path | None = None,
    target: str | None = None,
    settings: Settings | None = None,
    progress: bool = True,
) -> Analysis:
    """The interaction profile of `target` (a classification task of the config or model, or
    the column it reads; by default its first) over every pair of modalities, from encoders
    trained on `config` (one model per modality) or those of the model saved in `model`.
    Everything the arguments can get wrong is refused before any training."""
    if (config is None) == (model is None):
        raise ConfigError("analyze: give a config or a saved model (--model), not both")
    settings = (settings or Settings()).check()
    start = time.perf_counter()
    if model is not None:
        saved = load_saved(model)
        task = resolve_target(saved.config, target).task
        embedded = saved_encoders(saved, model, progress=progress)
    else:
        assert config is not None
        task = resolve_target(config, target).task
        embedded = train_encoders(config, progress=progress)
    analysis = profile(embedded, task, settings, progress=progress)
    analysis.seconds = time.perf_counter() - start
    return analysis
