"""Bulk de-duplication and linkage: deterministic, independent of input order, no chaining."""

from __future__ import annotations

import gc
import os
import random
from typing import Any

import numpy as np
import pytest

from tests.support import chinese_people
from yilian.kernel.errors import YilianError
from yilian.mpi.matching import bulk, parallel
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


def test_work_split_across_cores_gives_exactly_the_one_process_result(
    population: chinese_people.Population, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Comparing and bounding pairs run in forked workers on big lists; forced here on a small
    one (parts of 100 items, three workers), the clusters, links and learned model are identical."""
    records = population.person_records()
    alone = bulk.dedupe(records)
    monkeypatch.setattr(parallel, "MIN_ITEMS", 200)
    monkeypatch.setattr(parallel, "workers_available", lambda: 3)
    calls: list[int] = []
    real = parallel.split

    def counted(work: Any, n: int, *, workers: int | None = None) -> list[Any]:
        parts = real(work, n, workers=workers)
        calls.append(len(parts))
        return parts

    monkeypatch.setattr(bulk, "split", counted)
    together = bulk.dedupe(records)
    assert max(calls) == 3, calls  # the work really was split
    assert together.clusters == alone.clusters
    assert together.links == alone.links
    assert together.model.to_dict() == alone.model.to_dict()


def test_split_parts_cover_the_range_in_order_and_see_this_process_memory() -> None:
    data = list(range(50_000))  # the children read it without it being sent to them
    parts = parallel.split(lambda s, e: (os.getpid(), sum(data[s:e]), e - s), len(data), workers=2)
    assert sum(p[1] for p in parts) == sum(data) and sum(p[2] for p in parts) == len(data)
    assert len({p[0] for p in parts}) == 2  # one part here, one in a child
    assert parallel.split(lambda s, e: e - s, 10, workers=4) == [10]  # small work stays here


def test_the_collector_is_paused_for_the_run_and_restored(population: chinese_people.Population) -> None:
    seen: list[bool] = []
    bulk.dedupe(population.person_records()[:100], progress=lambda *_: seen.append(gc.isenabled()))
    assert seen and not any(seen)
    assert gc.isenabled()
    with pytest.raises(YilianError):  # a refused list: restored however the run stops
        bulk.dedupe([population.person_records()[0]] * 2)
    assert gc.isenabled()
