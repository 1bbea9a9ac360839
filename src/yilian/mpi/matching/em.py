"""Expectation–maximisation for the Fellegi–Sunter model, unsupervised.

``u`` (agreement among non-matches) is measured directly on random pairs, which are almost
all non-matches. ``m`` (agreement among matches) and the share of matches among the blocked
pairs are estimated by EM on the blocked pairs. Inside EM the non-match component gets its
own ``u`` (started from the random-pair one), because blocked non-matches are not random:
they were chosen for sharing a surname and a postcode, and holding ``u`` at its random-pair
value lets the match component swallow them all (the match share then runs to 1). The model
keeps the random-pair ``u``, which is what a non-match looks like in the population.

Works on distinct comparison vectors with their counts, so a million pairs cost no more
than the few thousand patterns they contain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_FLOOR = 1e-6


@dataclass(frozen=True, slots=True)
class EMResult:
    m: tuple[tuple[float, ...], ...]
    prior: float  # share of matches among the pairs EM saw
    iterations: int
    converged: bool


def level_frequencies(
    vectors: IntArray, n_levels: Sequence[int], *, smoothing: float = 0.5
) -> tuple[tuple[float, ...], ...]:
    """Per field, the share of each level among pairs where the field is not missing
    (``-1``), with additive smoothing so that a level never seen still has a small share."""
    out = []
    for f, n in enumerate(n_levels):
        column = vectors[:, f] if len(vectors) else np.zeros(0, dtype=np.int64)
        counts = np.bincount(column[column >= 0], minlength=n).astype(np.float64)[:n] + smoothing
        out.append(tuple(float(x) for x in counts / counts.sum()))
    return tuple(out)


def _log_likelihood(patterns: IntArray, params: Sequence[FloatArray]) -> FloatArray:
    total = np.zeros(len(patterns))
    for f, p in enumerate(params):
        column = patterns[:, f]
        present = column >= 0
        total[present] += np.log(p[column[present]])
    return total


def _m_step(patterns: IntArray, weights: FloatArray, n_levels: Sequence[int]) -> list[FloatArray]:
    out = []
    for f, n in enumerate(n_levels):
        column = patterns[:, f]
        present = column >= 0
        sums = np.bincount(column[present], weights=weights[present], minlength=n)[:n]
        level = np.maximum(sums / max(sums.sum(), 1e-300), _FLOOR)
        out.append(level / level.sum())
    return out


def _distinct_rows(vectors: IntArray) -> tuple[IntArray, IntArray]:
    """``np.unique(vectors, axis=0, return_counts=True)``, faster: a row of small levels is
    one base-8 number whose order is the rows' lexicographic order."""
    if vectors.min() >= -1 and vectors.max() < 7 and vectors.shape[1] <= 20:
        digits = 8 ** np.arange(vectors.shape[1] - 1, -1, -1, dtype=np.int64)
        codes = (vectors.astype(np.int64) + 1) @ digits
        _, first, counts = np.unique(codes, return_index=True, return_counts=True)
        return vectors[first], counts
    patterns, counts = np.unique(vectors, axis=0, return_counts=True)
    return patterns, counts


def expectation_maximisation(
    vectors: IntArray,
    n_levels: Sequence[int],
    u: Sequence[Sequence[float]],
    m_start: Sequence[Sequence[float]],
    *,
    prior_start: float = 0.1,
    max_iterations: int = 200,
    tolerance: float = 1e-6,
    fix_u: bool = False,
) -> EMResult:
    """Estimate ``m`` and the match share from comparison vectors (one row per pair, ``-1``
    for missing); ``u`` is the start of the non-match component (held there if ``fix_u``)."""
    if len(vectors) == 0:
        return EMResult(tuple(tuple(m) for m in m_start), prior_start, 0, False)
    patterns, counts_int = _distinct_rows(vectors)
    counts = counts_int.astype(np.float64)
    u_now = [np.asarray(x, dtype=np.float64) for x in u]
    m = [np.asarray(x, dtype=np.float64) for x in m_start]
    prior = prior_start
    converged = False
    iterations = 0
    for iterations in range(1, max_iterations + 1):  # noqa: B007 - reported in the result
        # E-step: posterior probability that each pattern is a match.
        log_odds = (
            np.log(prior) - np.log1p(-prior) + _log_likelihood(patterns, m) - _log_likelihood(patterns, u_now)
        )
        posterior = 1.0 / (1.0 + np.exp(-np.clip(log_odds, -700, 700)))
        weighted = counts * posterior
        if not fix_u:
            u_now = _m_step(patterns, counts * (1.0 - posterior), n_levels)
        # M-step.
        new_prior = float(weighted.sum() / counts.sum())
        new_prior = min(max(new_prior, _FLOOR), 1 - _FLOOR)
        new_m = _m_step(patterns, weighted, n_levels)
        change = max(
            abs(new_prior - prior), *(float(np.abs(a - b).max()) for a, b in zip(new_m, m, strict=True))
        )
        m, prior = new_m, new_prior
        if change < tolerance:
            converged = True
            break
    return EMResult(tuple(tuple(float(x) for x in row) for row in m), prior, iterations, converged)
