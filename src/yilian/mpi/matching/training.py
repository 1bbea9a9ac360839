"""Learning a :class:`MatchModel` from unlabelled records (what ``yilian mpi train`` runs).

1. ``u``: compare random pairs — nearly all of them are different persons.
2. ``m`` and the match share: EM over the blocked pairs (where the matches are), ``u`` fixed.
3. Prior: the match share among blocked pairs, scaled to all pairs.
4. Term frequencies of surnames and given names, counted in the data.

Deterministic: records are sorted by id and the random pairs come from a seeded generator,
so the same records give the same model whatever their order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np

from yilian.mpi.matching.blocking import MAX_BLOCK, Progress, candidate_pairs
from yilian.mpi.matching.comparison import FIELDS, Comparison, compare
from yilian.mpi.matching.em import expectation_maximisation, level_frequencies
from yilian.mpi.matching.features import Features, prepare
from yilian.mpi.matching.model import FieldModel, MatchModel, TermFrequencies, Thresholds
from yilian.mpi.matching.record import PersonRecord

_N_LEVELS = tuple(len(levels) for _, levels in FIELDS)
# Values seen once are not kept: the "unseen" frequency covers them and keeps the JSON small.
_TF_MIN_COUNT = 2
_TF_MAX_VALUES = 50_000
_PROGRESS_EVERY = 20_000


def compare_pairs(
    features: Sequence[Features], pairs: np.ndarray, *, progress: Progress | None = None
) -> list[Comparison]:
    """Comparison of each (i, j) row pair, in the canonical (record id) order."""
    out = []
    total = len(pairs)
    if progress:
        progress("comparing", 0, total)
    for k, (i, j) in enumerate(pairs.tolist(), 1):
        a, b = features[i], features[j]
        out.append(compare(b, a) if b.record_id < a.record_id else compare(a, b))
        if progress and k % _PROGRESS_EVERY == 0:
            progress("comparing", k, total)
    if progress and total:
        progress("comparing", total, total)
    return out


def _vectors(features: Sequence[Features], pairs: np.ndarray) -> np.ndarray:
    return vectors_of(compare_pairs(features, pairs))


def vectors_of(comparisons: Sequence[Comparison]) -> np.ndarray:
    if not comparisons:
        return np.zeros((0, len(FIELDS)), dtype=np.int64)
    return np.asarray([c.levels for c in comparisons], dtype=np.int64)


def _random_pairs(n: int, count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    i = rng.integers(0, n, size=count * 2)
    j = rng.integers(0, n, size=count * 2)
    keep = i != j
    pairs = np.stack([np.minimum(i, j), np.maximum(i, j)], axis=1)[keep][:count]
    return np.asarray(pairs, dtype=np.int64)


def term_frequencies(features: Sequence[Features]) -> dict[str, TermFrequencies]:
    n = max(len(features), 1)
    out = {}
    for field_name, values in (
        ("family_name", Counter(f.name.family_key for f in features if f.name.family)),
        ("given_name", Counter(f.name.given for f in features if f.name.given)),
    ):
        common = [(v, c) for v, c in values.most_common(_TF_MAX_VALUES) if c >= _TF_MIN_COUNT]
        out[field_name] = TermFrequencies({v: c / n for v, c in common}, 1.0 / n)
    return out


def train(
    records: Sequence[PersonRecord] | Sequence[Features],
    *,
    start: MatchModel | None = None,
    random_pairs: int = 100_000,
    max_em_pairs: int = 400_000,
    max_block: int = MAX_BLOCK,
    seed: int = 20240601,
    thresholds: Thresholds | None = None,
    progress: Progress | None = None,
) -> MatchModel:
    """Learn a model from records of one population (the index, or a file to de-duplicate)."""
    features = sorted(
        (r if isinstance(r, Features) else prepare(r) for r in records), key=lambda f: f.record_id
    )
    if len(features) < 2:
        return start or MatchModel.default()
    blocked = candidate_pairs(features, max_block=max_block, progress=progress)
    n_blocked = len(blocked)
    if n_blocked > max_em_pairs:
        rng = np.random.default_rng(seed + 1)
        blocked = blocked[np.sort(rng.choice(n_blocked, size=max_em_pairs, replace=False))]
    if progress:
        progress("training: comparing blocked pairs", 0, len(blocked))
    return fit(
        features,
        _vectors(features, blocked),
        n_blocked,
        start=start,
        random_pairs=random_pairs,
        seed=seed,
        thresholds=thresholds,
        progress=progress,
    )


def fit(
    features: Sequence[Features],
    blocked_vectors: np.ndarray,
    n_blocked: int,
    *,
    start: MatchModel | None = None,
    random_pairs: int = 100_000,
    seed: int = 20240601,
    thresholds: Thresholds | None = None,
    progress: Progress | None = None,
    vectors_for: Callable[[np.ndarray], np.ndarray] | None = None,
) -> MatchModel:
    """The model from the comparison vectors of (a sample of) the ``n_blocked`` blocked pairs
    of ``features`` (sorted by record id), which bulk runs have computed anyway.
    ``vectors_for(pairs)`` compares the random pairs (default: one by one)."""
    start = start or MatchModel.default()
    n = len(features)
    total_pairs = n * (n - 1) / 2
    if progress:
        progress("training: random pairs", 0, random_pairs)
    randoms = _random_pairs(n, random_pairs, seed)
    u = level_frequencies(
        vectors_for(randoms) if vectors_for is not None else _vectors(features, randoms), _N_LEVELS
    )
    if progress:
        progress("training: EM", 0, len(blocked_vectors))
    em = expectation_maximisation(blocked_vectors, _N_LEVELS, u, [f.m for f in start.fields], prior_start=0.2)
    prior = min(max(em.prior * n_blocked / total_pairs, 1e-12), 0.5)
    fields = tuple(FieldModel(name, levels, em.m[i], u[i]) for i, (name, levels) in enumerate(FIELDS))
    return MatchModel(
        fields=fields,
        prior=prior,
        thresholds=thresholds or start.thresholds,
        term_frequencies=term_frequencies(features),
        training={
            "records": n,
            "random_pairs": random_pairs,
            "blocked_pairs": n_blocked,
            "em_pairs": len(blocked_vectors),
            "em_iterations": em.iterations,
            "em_converged": em.converged,
            "match_share_in_blocked_pairs": em.prior,
            "seed": seed,
        },
    )
