"""The generated Chinese population: quality per kind of registration error.

Overall pairwise F1 is asserted at 0.97: the measured value on this seed is above 0.99, and
the margin covers the one kind that is weak by design (look-alike slips that the matcher's
table does not know go to review, not to an automatic merge). Relatives — twins, parents
and children sharing a surname, an address and a phone — must never be merged.
"""

from __future__ import annotations

import pytest

from tests.support import chinese_people
from yilian.mpi.matching import bulk


@pytest.fixture(scope="module")
def evaluated() -> tuple[chinese_people.Population, bulk.DedupeResult]:
    population = chinese_people.generate(3000, seed=20240601)
    return population, bulk.dedupe(population.person_records())


def test_generator_is_deterministic_and_labelled() -> None:
    a, b = chinese_people.generate(300, seed=3), chinese_people.generate(300, seed=3)
    assert a.records == b.records
    kinds = {r.kind for r in chinese_people.generate(2000, seed=4).records}
    assert kinds >= {"original", *chinese_people.KINDS, *chinese_people.HOUSEHOLD_KINDS}


def test_quality_per_kind(evaluated: tuple[chinese_people.Population, bulk.DedupeResult]) -> None:
    population, result = evaluated
    stats = chinese_people.per_kind(population, result.clusters)
    precision, recall, f1 = chinese_people.pair_scores(population.truth(), result.clusters)
    print("\n" + chinese_people.format_table(stats))
    print(f"overall: precision {precision:.4f} recall {recall:.4f} F1 {f1:.4f}")
    assert f1 >= 0.97
    assert precision >= 0.995
    by_kind = {s.kind: s for s in stats}
    for kind in chinese_people.KINDS:
        if kind != "lookalike":
            assert by_kind[kind].recall >= 0.9, kind
        # Each kind of error merges nobody wrongly: what is linked is the same person.
        assert by_kind[kind].linked_pairs > 0 and by_kind[kind].precision >= 0.99, kind


def test_relatives_are_never_merged(evaluated: tuple[chinese_people.Population, bulk.DedupeResult]) -> None:
    population, result = evaluated
    truth = population.truth()
    for r in population.records:
        if r.kind in chinese_people.HOUSEHOLD_KINDS:
            cluster = result.clusters[r.record.record_id]
            assert all(truth[o] == r.person for o, c in result.clusters.items() if c == cluster)
    certain_false = [
        x for x in result.links if x.grade == "certain" and truth[x.left_id] != truth[x.right_id]
    ]
    assert certain_false == []
