"""Bulk de-duplication and linkage: deterministic, independent of input order, no chaining."""

from __future__ import annotations

import random

import numpy as np
import pytest

from tests.support import chinese_people
from yilian.mpi.matching import bulk
from yilian.mpi.matching.record import PersonRecord


@pytest.fixture(scope="module")
def population() -> chinese_people.Population:
    return chinese_people.generate(600, seed=11)


def test_same_input_same_clusters_in_any_order(population: chinese_people.Population) -> None:
    records = population.person_records()
    first = bulk.dedupe(records)
    shuffled = list(records)
    random.Random(5).shuffle(shuffled)
    second = bulk.dedupe(shuffled)
    assert first.clusters == second.clusters
    assert first.links == second.links
    assert first.model.to_dict() == second.model.to_dict()


def test_progress_is_reported(population: chinese_people.Population) -> None:
    seen: list[str] = []
    bulk.dedupe(population.person_records()[:200], progress=lambda stage, done, total: seen.append(stage))
    assert "clustering" in seen


def test_cluster_ids_are_the_smallest_member(population: chinese_people.Population) -> None:
    result = bulk.dedupe(population.person_records())
    for cluster, members in result.cluster_members().items():
        assert cluster == min(members)


def test_duplicate_record_ids_are_refused() -> None:
    from yilian.kernel.errors import YilianError

    with pytest.raises(YilianError):
        bulk.dedupe([PersonRecord("a"), PersonRecord("a")])


def test_link_pairs_two_lists(population: chinese_people.Population) -> None:
    left = [r.record for r in population.records if r.kind == "original"]
    right = [r.record for r in population.records if r.kind in chinese_people.KINDS]
    truth = population.truth()
    pairs = bulk.link(left, right, min_grade="certain")
    assert pairs
    correct = sum(truth[p.left_id] == truth[p.right_id] for p in pairs)
    assert correct / len(pairs) > 0.99
    assert len({p.right_id for p in pairs}) / len(right) > 0.9
    assert pairs == sorted(pairs, key=lambda p: (p.left_id, -p.probability, -p.weight, p.right_id))


def test_a_chain_through_a_bad_record_is_not_followed() -> None:
    # Mother and daughter, each "certainly" linked by ID number to one bad record that carries
    # the mother's number and the daughter's name: one cluster would merge two people.
    import datetime as dt

    from yilian.kernel import prc_id

    mother_id = prc_id.generate("330502", dt.date(1960, 1, 5), "female", 2)
    daughter_id = prc_id.generate("330502", dt.date(1988, 6, 7), "female", 4)
    mother = PersonRecord(
        "m",
        full_name="周丽",
        birth_date=dt.date(1960, 1, 5),
        sex="female",
        prc_id=mother_id,
        phone="13911112222",
    )
    daughter = PersonRecord(
        "d",
        full_name="周婷",
        birth_date=dt.date(1988, 6, 7),
        sex="female",
        prc_id=daughter_id,
        phone="13911112222",
    )
    bad = PersonRecord(
        "x",
        full_name="周婷",
        birth_date=dt.date(1960, 1, 5),
        sex="female",
        prc_id=mother_id,
        phone="13911112222",
        mrn="1",
        source="H9",
    )
    bad2 = PersonRecord(
        "y",
        full_name="周婷",
        birth_date=dt.date(1988, 6, 7),
        sex="female",
        prc_id=daughter_id,
        mrn="1",
        source="H9",
    )
    result = bulk.dedupe([mother, daughter, bad, bad2])
    assert result.clusters["m"] != result.clusters["d"]


def test_weight_bounds_never_undercut_the_exact_weight(population: chinese_people.Population) -> None:
    from yilian.mpi.matching.blocking import candidate_pairs
    from yilian.mpi.matching.training import compare_pairs, vectors_of
    from yilian.mpi.matching.vectorised import BatchColumns, exact_weights, may_force

    records = population.person_records()
    model = bulk.dedupe(records).model
    features = sorted((bulk.prepare(r) for r in records), key=lambda f: f.record_id)
    rng = np.random.default_rng(3)
    strangers = np.sort(rng.integers(0, len(features), size=(20_000, 2)), axis=1)
    pairs = np.unique(
        np.concatenate([candidate_pairs(features), strangers[strangers[:, 0] < strangers[:, 1]]]), axis=0
    )
    comparisons = compare_pairs(features, pairs)
    vectors = vectors_of(comparisons)
    columns = BatchColumns(features, model)
    # The batch comparison gives what the pair-by-pair one gives.
    batch, family_values, given_values = columns.compare(pairs)
    assert (batch == vectors).all()
    assert family_values == [c.family_value for c in comparisons]
    assert given_values == [c.given_value for c in comparisons]
    exact = exact_weights(model, vectors, family_values, given_values)
    bound, force = columns.bounds(pairs)
    assert len(pairs) > 5_000
    assert (bound >= exact - 1e-9).all()
    assert not (may_force(vectors) & ~force).any()
    # …and the per-pair scorer sums to the same weights.
    matcher = bulk.Matcher(model)
    for k in range(0, len(pairs), 97):
        a, b = features[int(pairs[k, 0])], features[int(pairs[k, 1])]
        assert abs(sum(model.field_weights(comparisons[k])) - exact[k]) < 1e-9
        assert matcher.score_compared(a, b, comparisons[k]).comparison == comparisons[k]


def test_pruned_scoring_finds_what_scoring_every_pair_finds(population: chinese_people.Population) -> None:
    from yilian.mpi.matching.blocking import candidate_pairs

    records = population.person_records()
    matcher = bulk.Matcher(bulk.dedupe(records).model)
    result = bulk.dedupe(records, matcher=matcher)  # a given model: every pair goes through the bounds
    features = sorted((bulk.prepare(r) for r in records), key=lambda f: f.record_id)
    expected = set()
    for i, j in candidate_pairs(features).tolist():
        s = matcher.score(features[i], features[j])
        if s.grade != "certainly-not":
            expected.add((features[i].record_id, features[j].record_id, s.probability, s.grade))
    got = {(x.left_id, x.right_id, x.probability, x.grade) for x in result.links}
    assert got == expected
    assert any(g == "certain" for *_, g in got) and any(g != "certain" for *_, g in got)
