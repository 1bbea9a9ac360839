"""EM recovers known m, u and match share from synthetic comparison vectors."""

from __future__ import annotations

import numpy as np

from yilian.mpi.matching.em import expectation_maximisation, level_frequencies

M = ([0.9, 0.07, 0.03], [0.85, 0.15], [0.8, 0.1, 0.1], [0.95, 0.05])
U = ([0.02, 0.08, 0.9], [0.1, 0.9], [0.01, 0.09, 0.9], [0.3, 0.7])
LEVELS = [3, 2, 3, 2]


def _sample(n: int, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    is_match = rng.random(n) < share
    cols = []
    for f, n_levels in enumerate(LEVELS):
        m_draw = rng.choice(n_levels, size=n, p=M[f])
        u_draw = rng.choice(n_levels, size=n, p=U[f])
        cols.append(np.where(is_match, m_draw, u_draw))
    vectors = np.stack(cols, axis=1).astype(np.int64)
    vectors[rng.random(n) < 0.1, 3] = -1  # missing values weigh nothing
    return vectors, is_match


def test_em_recovers_m_and_the_match_share() -> None:
    vectors, is_match = _sample(60_000, 0.3, seed=1)
    start = [[0.6, 0.3, 0.1], [0.6, 0.4], [0.6, 0.3, 0.1], [0.6, 0.4]]
    result = expectation_maximisation(vectors, LEVELS, U, start, prior_start=0.5)
    assert result.converged
    assert abs(result.prior - is_match.mean()) < 0.02
    for f in range(len(LEVELS)):
        assert np.allclose(result.m[f], M[f], atol=0.03), (f, result.m[f])


def test_em_with_free_u_still_finds_the_matches() -> None:
    vectors, is_match = _sample(60_000, 0.2, seed=2)
    rough_u = [[0.05, 0.15, 0.8], [0.2, 0.8], [0.05, 0.15, 0.8], [0.4, 0.6]]
    start = [[0.6, 0.3, 0.1], [0.6, 0.4], [0.6, 0.3, 0.1], [0.6, 0.4]]
    result = expectation_maximisation(vectors, LEVELS, rough_u, start, prior_start=0.5)
    assert abs(result.prior - is_match.mean()) < 0.03
    assert np.allclose(result.m[0], M[0], atol=0.05)


def test_u_from_random_pairs_is_the_level_share() -> None:
    vectors, _ = _sample(100_000, 0.0, seed=3)
    u = level_frequencies(vectors, LEVELS, smoothing=0)
    for f in range(len(LEVELS)):
        assert np.allclose(u[f], U[f], atol=0.01)
