"""The map and reduce steps of bulk dedupe give what one process gives.

The steps are run as a distributed engine would run them — records split into partitions,
each step applied per partition, rows shuffled by key between steps, everything pickled
across the boundary — and the result is compared with ``bulk.dedupe`` under the same model.
"""

from __future__ import annotations

import pickle
import random
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import pytest

from tests.support import chinese_people
from tests.support.paths import SHARED
from yilian.mpi.matching import bulk, distributed
from yilian.mpi.matching.bulk import Link
from yilian.mpi.matching.column_map import load_column_map, shipped_map
from yilian.mpi.matching.matcher import Matcher
from yilian.mpi.matching.record import PersonRecord

T = TypeVar("T")
U = TypeVar("U")


def _partitions(rows: list[T], n: int, seed: int) -> list[list[T]]:
    shuffled = list(rows)
    random.Random(seed).shuffle(shuffled)
    return [shuffled[i::n] for i in range(n)]


def _across(parts: list[list[T]], step: Callable[[list[T]], Iterable[U]]) -> list[list[U]]:
    """A step on every partition, its output pickled as it would cross to another worker."""
    return [pickle.loads(pickle.dumps(list(step(p)))) for p in parts]


def _shuffle_by_key(parts: list[list[tuple[Any, Any]]], n: int) -> list[dict[Any, list[Any]]]:
    grouped: list[dict[Any, list[Any]]] = [defaultdict(list) for _ in range(n)]
    for part in parts:
        for key, value in part:
            grouped[hash(key) % n][key].append(value)
    return grouped


def run_distributed(
    records: list[PersonRecord], model_json: str, n: int = 3
) -> tuple[dict[str, str], set[Link]]:
    parts = _partitions(records, n, seed=7)
    keyed = _across(parts, lambda p: [row for r in p for row in distributed.blocking_rows(r)])
    blocks = _shuffle_by_key(keyed, n)
    pair_parts = [[pair for ids in b.values() for pair in distributed.block_pairs(ids)] for b in blocks]
    pairs = sorted({pair for part in pair_parts for pair in part})  # distinct()
    by_id = {r.record_id: r for r in records}  # the join of each pair with its two records
    joined = _partitions([(by_id[a], by_id[b]) for a, b in pairs], n, seed=8)
    link_parts = _across(joined, lambda p: distributed.score_pairs(p, model_json))
    links = {x for part in link_parts for x in part}
    certain_ids = {i for x in links if x.grade == "certain" for i in (x.left_id, x.right_id)}
    clusters = distributed.cluster([by_id[i] for i in sorted(certain_ids)], links, model_json)
    return clusters, links


def _persons(assignment: dict[str, str]) -> set[frozenset[str]]:
    groups: dict[str, set[str]] = defaultdict(set)
    for record_id, cluster_id in assignment.items():
        groups[cluster_id].add(record_id)
    return {frozenset(g) for g in groups.values() if len(g) > 1}


@pytest.mark.parametrize("source", ["chinese", "febrl"])
def test_the_steps_give_the_one_process_result(source: str) -> None:
    if source == "chinese":
        records = chinese_people.generate(700, seed=23).person_records()
    else:
        records = load_column_map(shipped_map("febrl")).read_csv(
            SHARED / "record-linkage" / "febrl" / "dataset1.csv"
        )
    model = bulk.dedupe(records).model  # learned once (in a region: on a sample), then broadcast
    one = bulk.dedupe(records, matcher=Matcher(model))
    clusters, links = run_distributed(list(records), model.to_json())
    assert _persons(clusters) == _persons(one.clusters)
    assert len(_persons(clusters)) > 50
    assert {(x.left_id, x.right_id, x.grade) for x in links} == {
        (x.left_id, x.right_id, x.grade) for x in one.links
    }
    assert any(x.grade == "probable" for x in links)


def test_an_oversized_block_gives_no_pairs_and_repeats_count_towards_its_size() -> None:
    assert distributed.block_pairs(["b", "a", "c"], max_block=3) == [("a", "b"), ("a", "c"), ("b", "c")]
    assert distributed.block_pairs(["a", "b", "c", "d"], max_block=3) == []
    assert distributed.block_pairs(["a", "a", "b", "b"], max_block=3) == []  # as one process counts
    assert distributed.block_pairs(["a", "a"]) == []


def test_clustering_needs_the_records_of_every_certain_link() -> None:
    model = Matcher().model
    link = Link("x", "y", 0.999, 20.0, "certain")
    with pytest.raises(ValueError, match="linked ids"):
        distributed.cluster([PersonRecord("x", full_name="张伟")], [link], model)
