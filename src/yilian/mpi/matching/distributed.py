"""Bulk de-duplication as map and reduce steps, for a distributed engine (Spark, Dask, Ray…).

When a region's lists outgrow one machine, linkage runs on an engine the region already has
rather than on one we would build. Each step here is a pure function of plain rows — no
database, no shared state, records and links pickle — so an engine can run it on any worker:

1. **map** every record to its blocking keys: :func:`blocking_rows` → ``(block key, record id)``;
2. **reduce** by block key to candidate pairs: :func:`block_pairs` (a block larger than
   ``max_block`` gives none, as in one process), then remove repeated pairs (``distinct``);
3. **map** each pair, joined back to its two records, to a graded link: :func:`score_pairs`
   with the model learned once (``yilian mpi train`` or :func:`~yilian.mpi.matching.train` on a
   sample: EM needs a few hundred thousand pairs, not the region) and broadcast as JSON;
4. **collect** the ``certain`` links and their records on one node and :func:`cluster` them:
   merging is ordered (strongest link first) and refuses chains that would join two people, so
   it runs where all of a cluster's links meet. Certain links are about as many as duplicates,
   which fits one machine long after the records do.

With the same model the result is the one :func:`~yilian.mpi.matching.dedupe` gives in one
process (``tests/unit/mpi/test_distributed.py`` runs the steps partition by partition and
compares). ``docs/mpi.md`` shows the steps as a PySpark job.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from yilian.mpi.matching.blocking import MAX_BLOCK, record_keys
from yilian.mpi.matching.bulk import Link, _Clusters, _link, _order
from yilian.mpi.matching.features import Features, prepare
from yilian.mpi.matching.matcher import Matcher
from yilian.mpi.matching.model import GRADES, Grade, MatchModel
from yilian.mpi.matching.record import PersonRecord

__all__ = ["block_pairs", "blocking_rows", "cluster", "matcher_of", "score_pairs"]

_KEY_SEPARATOR = "\x1f"


def blocking_rows(record: PersonRecord) -> list[tuple[str, str]]:
    """Map step: ``(block key, record id)`` for every blocking key of ``record``.

    A record may give one key twice (two spellings of a name, one key); the reduce step
    counts the block's size as one process does, repeats included."""
    f = prepare(record)
    return [(f"{rule}{_KEY_SEPARATOR}{key}", record.record_id) for rule, key in record_keys(f)]


def block_pairs(record_ids: Iterable[str], *, max_block: int = MAX_BLOCK) -> list[tuple[str, str]]:
    """Reduce step, per block key: every pair ``(a, b)``, ``a < b``, of the block's records.

    A block of more than ``max_block`` entries (a common surname in one postcode, a
    placeholder phone) gives no pairs: its records meet through their other keys."""
    entries = list(record_ids)
    if not 2 <= len(entries) <= max_block:
        return []
    ids = sorted(set(entries))
    return [(a, b) for i, a in enumerate(ids) for b in ids[i + 1 :]]


def matcher_of(model: MatchModel | str) -> Matcher:
    """The matcher for a broadcast model (the object, or its JSON)."""
    return Matcher(model if isinstance(model, MatchModel) else MatchModel.from_json(model))


def score_pairs(
    pairs: Iterable[tuple[PersonRecord, PersonRecord]],
    model: MatchModel | str | Matcher,
    *,
    min_grade: Grade = "possible",
) -> Iterator[Link]:
    """Map step: the graded link of each pair of records (rules and model, as one process
    scores it), for the pairs graded ``min_grade`` or better. Each pair as ``(a, b)`` with
    ``a.record_id < b.record_id``, as :func:`block_pairs` gives them."""
    matcher = model if isinstance(model, Matcher) else matcher_of(model)
    wanted = frozenset(GRADES[: GRADES.index(min_grade) + 1])
    prepared: dict[str, Features] = {}  # a record meets several others in one partition

    def features(r: PersonRecord) -> Features:
        f = prepared.get(r.record_id)
        if f is None:
            f = prepared[r.record_id] = prepare(r)
        return f

    for a, b in pairs:
        fa, fb = features(a), features(b)
        score = matcher.score(fa, fb)
        if score.grade in wanted:
            yield _link(fa, fb, score)


def cluster(
    records: Sequence[PersonRecord], links: Iterable[Link], model: MatchModel | str | Matcher
) -> dict[str, str]:
    """The collect step: record id → cluster id (the smallest record id of its cluster) for
    the records of the ``certain`` links, merged strongest first with the same refusal of
    chains as one process. Records in no certain link are clusters of their own."""
    matcher = model if isinstance(model, Matcher) else matcher_of(model)
    certain = sorted((x for x in links if x.grade == "certain"), key=_order)
    wanted = {i for x in certain for i in (x.left_id, x.right_id)}
    features = sorted((prepare(r) for r in records if r.record_id in wanted), key=lambda f: f.record_id)
    missing = wanted - {f.record_id for f in features}
    if missing:
        raise ValueError(f"the records of {len(missing)} linked ids were not given, e.g. {min(missing)}")
    clusters = _Clusters(features, matcher)
    for x in certain:
        clusters.merge(clusters.row[x.left_id], clusters.row[x.right_id])
    return clusters.assignment()
