"""Bulk matching of legacy lists: de-duplicate one list into persons, or link two lists.

Both run the same pipeline as the real-time index — prepare, block, score — over all
blocked pairs at once. De-duplication then clusters the ``certain`` links; a plain
connected-components step would let a chain A–B–C merge A and C even when A and C
clearly are two people (a mother and daughter each linked to a badly typed record), so links
are added strongest first and a link that would join two groups containing a contradicting
pair is refused and reported instead.

Results depend only on the records, not on their order in the file.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from yilian.mpi.matching.blocking import MAX_BLOCK, Progress, candidate_links, candidate_pairs
from yilian.mpi.matching.comparison import Comparison
from yilian.mpi.matching.features import Features, prepare
from yilian.mpi.matching.matcher import Matcher, PairScore
from yilian.mpi.matching.model import GRADES, Grade, MatchModel, Thresholds
from yilian.mpi.matching.parallel import split
from yilian.mpi.matching.record import PersonRecord
from yilian.mpi.matching.training import fit, train, vectors_of
from yilian.mpi.matching.vectorised import BatchColumns, exact_weights, may_force, weight_cut

# Above this many record pairs between two groups the consistency check samples nothing and
# trusts the link: such groups only arise from very common keys, which blocking caps anyway.
_MAX_CROSS_CHECK = 2_500
_HARD_CONTRADICTIONS = frozenset({"different-valid-id-numbers", "sex-differs", "birth-year-differs"})
_PROGRESS_EVERY = 20_000
_MAX_EM_PAIRS = 400_000
_EM_SEED = 20240602
_MARGIN = 1e-6  # bits: numpy sums in another order than the exact scorer's


@dataclass(frozen=True, slots=True)
class Link:
    left_id: str
    right_id: str
    probability: float
    weight: float
    grade: Grade


@dataclass(frozen=True)
class DedupeResult:
    clusters: dict[str, str]  # record id → cluster id (the smallest record id in the cluster)
    links: tuple[Link, ...]  # every scored pair graded "possible" or better, strongest first
    pairs_scored: int
    refused_links: tuple[Link, ...]  # certain links not followed: they would chain two people
    model: MatchModel

    def cluster_members(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for record_id, cluster in sorted(self.clusters.items()):
            out.setdefault(cluster, []).append(record_id)
        return out


def _prepare_all(records: Sequence[PersonRecord], progress: Progress | None) -> list[Features]:
    # One process: a worker's prepared records cost more to send back (pickled, even as plain
    # tuples) than preparing them here does (measured: docs/performance.md).
    out = []
    for k, r in enumerate(records, 1):
        out.append(prepare(r))
        if progress and k % _PROGRESS_EVERY == 0:
            progress("preparing", k, len(records))
    ids = [f.record_id for f in out]
    if len(set(ids)) != len(ids):
        from yilian.kernel.errors import Category, YilianError

        raise YilianError(Category.INVALID, "record ids must be unique within a list")
    return sorted(out, key=lambda f: f.record_id)


def _matcher_for(
    features: Sequence[Features],
    matcher: Matcher | None,
    progress: Progress | None,
    pairs: np.ndarray | None = None,
    comparisons: Sequence[Comparison] | None = None,
) -> Matcher:
    if matcher is not None:
        return matcher
    if pairs is None or comparisons is None:
        return Matcher(train(features, progress=progress))
    # EM on the comparisons this run needs anyway (all blocked pairs, or a sample of them).
    vectors = vectors_of(comparisons)
    if len(vectors) > _MAX_EM_PAIRS:
        rng = np.random.default_rng(_EM_SEED)
        vectors = vectors[np.sort(rng.choice(len(vectors), size=_MAX_EM_PAIRS, replace=False))]
    return Matcher(fit(features, vectors, len(pairs), progress=progress))


def _with_thresholds(matcher: Matcher, thresholds: Thresholds | None) -> Matcher:
    return matcher if thresholds is None else Matcher(matcher.model.with_thresholds(thresholds))


def _link(a: Features, b: Features, s: PairScore) -> Link:
    left, right = (a, b) if a.record_id <= b.record_id else (b, a)
    return Link(left.record_id, right.record_id, s.probability, s.weight, s.grade)


def _order(link: Link) -> tuple[float, float, str, str]:
    return (-link.probability, -link.weight, link.left_id, link.right_id)


class _Clusters:
    """Union–find with member lists and the consistency check on merge."""

    def __init__(self, features: Sequence[Features], matcher: Matcher) -> None:
        self.features = features
        self.matcher = matcher
        self.row = {f.record_id: i for i, f in enumerate(features)}
        self.parent = list(range(len(features)))
        self.members: dict[int, list[int]] = {i: [i] for i in range(len(features))}

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def _contradict(self, i: int, j: int) -> bool:
        s = self.matcher.score(self.features[i], self.features[j])
        if s.grade == "certain":
            return False
        # Net evidence against (Bayes factor below one, prior aside) or a hard contradiction.
        return s.weight - self.matcher.model.prior_weight < 0 or bool(_HARD_CONTRADICTIONS & set(s.rules))

    def merge(self, i: int, j: int) -> bool:
        ri, rj = self.find(i), self.find(j)
        if ri == rj:
            return True
        a, b = self.members[ri], self.members[rj]
        if len(a) * len(b) <= _MAX_CROSS_CHECK and (len(a) > 1 or len(b) > 1):
            for x in a:
                for y in b:
                    if (x, y) != (i, j) and (y, x) != (i, j) and self._contradict(x, y):
                        return False
        if len(a) < len(b) or (len(a) == len(b) and rj < ri):
            ri, rj = rj, ri
        self.parent[rj] = ri
        self.members[ri].extend(self.members.pop(rj))
        return True

    def assignment(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for members in self.members.values():
            ids = sorted(self.features[m].record_id for m in members)
            for record_id in ids:
                out[record_id] = ids[0]
        return out


def _compare(columns: BatchColumns, pairs: np.ndarray) -> tuple[np.ndarray, list[str], list[str]]:
    """``columns.compare(pairs)``, the names of each part of the pairs compared on a core of its own."""
    parts = split(lambda start, end: columns.compare(pairs[start:end]), len(pairs))
    if len(parts) == 1:
        return parts[0]
    vectors = np.concatenate([p[0] for p in parts])
    return vectors, [v for p in parts for v in p[1]], [v for p in parts for v in p[2]]


def _bounds(columns: BatchColumns, pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``columns.bounds(pairs)`` with the pairs in parts on the cores (numpy uses one)."""
    parts = split(lambda start, end: columns.bounds(pairs[start:end]), len(pairs))
    if len(parts) == 1:
        return parts[0]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _em_sample(n_pairs: int) -> np.ndarray:
    """Rows of the blocked pairs that EM learns from: all of them, or a seeded sample."""
    if n_pairs <= _MAX_EM_PAIRS:
        return np.arange(n_pairs, dtype=np.int64)
    rng = np.random.default_rng(_EM_SEED)
    return np.sort(rng.choice(n_pairs, size=_MAX_EM_PAIRS, replace=False))


@contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """The cyclic garbage collector paused for a bulk run: it allocates a few objects per
    record and pair that live until the end (none of them cyclic garbage), and the collector's
    passes over the growing heap took a quarter of the run (docs/performance.md)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


@_no_cyclic_gc()
def dedupe(
    records: Sequence[PersonRecord],
    *,
    matcher: Matcher | None = None,
    max_block: int = MAX_BLOCK,
    thresholds: Thresholds | None = None,
    progress: Progress | None = None,
) -> DedupeResult:
    """Group the records of one list into persons.

    Without a ``matcher`` the model is learned from the list itself (EM, as ``train``).
    Only ``certain`` links merge; ``probable`` and ``possible`` ones are returned in
    ``links`` for review. ``thresholds`` replaces the model's grade cut-offs (a learned
    model's or the given ``matcher``'s).
    """
    features = _prepare_all(records, progress)
    pairs = candidate_pairs(features, max_block=max_block, progress=progress)
    columns = BatchColumns(features)
    # EM learns from (a sample of) the blocked pairs, which must be compared in full for it.
    sample = _em_sample(len(pairs)) if matcher is None else np.zeros(0, dtype=np.int64)
    compared = pairs[sample]
    if progress:
        progress("comparing", 0, len(compared))
    vectors, family_values, given_values = _compare(columns, compared)
    if matcher is None:
        matcher = Matcher(
            fit(
                features,
                vectors,
                len(pairs),
                progress=progress,
                vectors_for=lambda p: _compare(columns, p)[0],
            )
        )
    matcher = _with_thresholds(matcher, thresholds)
    model = matcher.model
    cut = weight_cut(model) - _MARGIN
    # The other blocked pairs are compared only if their weight's upper bound can reach
    # "possible" or a rule may force them (vectorised.py): the rest are "certainly-not".
    rest = np.ones(len(pairs), dtype=np.bool_)
    rest[sample] = False
    if rest.any():
        if progress:
            progress("bounding", 0, int(rest.sum()))
        columns.use_model(model)
        bound, force = _bounds(columns, pairs[rest])
        kept = pairs[rest][(bound >= cut) | force]
        if progress:
            progress("comparing", 0, len(kept))
        more, more_family, more_given = _compare(columns, kept)
        compared = np.concatenate([compared, kept])
        vectors = np.concatenate([vectors, more])
        family_values += more_family
        given_values += more_given
    # Scored one by one (rules, grade) only where the exact weight reaches "possible" or a
    # rule may force the grade: the other compared pairs are "certainly-not" as well.
    weights = exact_weights(model, vectors, family_values, given_values)
    to_score = np.flatnonzero((weights >= cut) | may_force(vectors))
    links: list[Link] = []
    rows = compared.tolist()
    for done, k in enumerate(to_score.tolist(), 1):
        i, j = rows[k]
        a, b = features[i], features[j]  # i < j: rows are sorted by record id
        comparison = Comparison(tuple(vectors[k].tolist()), family_values[k], given_values[k])
        s = matcher.score_compared(a, b, comparison)
        if s.grade != "certainly-not":
            links.append(_link(a, b, s))
        if progress and done % _PROGRESS_EVERY == 0:
            progress("scoring", done, len(to_score))
    if progress:
        progress("scoring", len(to_score), len(to_score))
    links.sort(key=_order)
    clusters = _Clusters(features, matcher)
    refused = []
    for link in links:
        if link.grade != "certain":
            continue
        if not clusters.merge(clusters.row[link.left_id], clusters.row[link.right_id]):
            refused.append(link)
    if progress:
        progress("clustering", len(links), len(links))
    return DedupeResult(
        clusters=clusters.assignment(),
        links=tuple(links),
        pairs_scored=len(pairs),
        refused_links=tuple(refused),
        model=matcher.model,
    )


@_no_cyclic_gc()
def link(
    left: Sequence[PersonRecord],
    right: Sequence[PersonRecord],
    *,
    matcher: Matcher | None = None,
    min_grade: Grade = "possible",
    max_block: int = MAX_BLOCK,
    thresholds: Thresholds | None = None,
    progress: Progress | None = None,
) -> list[Link]:
    """Pairs (left id, right id, probability, grade) between two lists, graded ``min_grade``
    or better, ordered by left id then strongest first. Without a ``matcher`` the model is
    learned from both lists together."""
    lf = _prepare_all(left, progress)
    rf = _prepare_all(right, progress)
    matcher = _with_thresholds(_matcher_for([*lf, *rf], matcher, progress), thresholds)
    pairs = candidate_links(lf, rf, max_block=max_block)
    limit = GRADES.index(min_grade)
    out = []
    for k, (i, j) in enumerate(pairs, 1):
        a, b = lf[int(i)], rf[int(j)]
        s = matcher.score(a, b)
        if GRADES.index(s.grade) <= limit:
            out.append(Link(a.record_id, b.record_id, s.probability, s.weight, s.grade))
        if progress and k % _PROGRESS_EVERY == 0:
            progress("scoring", k, len(pairs))
    if progress:
        progress("scoring", len(pairs), len(pairs))
    out.sort(key=lambda x: (x.left_id, -x.probability, -x.weight, x.right_id))
    return out
