"""The real-time index: add, match, update, remove."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest

from yilian.kernel import prc_id
from yilian.kernel.errors import YilianError
from yilian.mpi.matching.index import MatchIndex
from yilian.mpi.matching.record import PersonRecord

BORN = dt.date(1979, 11, 23)
ZHANG = PersonRecord(
    "h1-1",
    source="H1",
    full_name="张晓明",
    birth_date=BORN,
    sex="male",
    prc_id=prc_id.generate("330502", BORN, "male", 17),
    phone="13700001111",
    postcode="313000",
)
LI = PersonRecord(
    "h1-2", source="H1", full_name="李娜", birth_date=dt.date(1990, 2, 3), sex="female", phone="13700002222"
)


def _index() -> MatchIndex:
    index = MatchIndex()
    index.add("P1", ZHANG)
    index.add("P2", LI)
    for k in range(200):  # unrelated people, so that blocking has something to skip
        index.add(
            f"X{k}",
            PersonRecord(
                f"x{k}",
                full_name=f"王{'伟芳娜敏静丽强磊军洋'[k % 10]}",
                birth_date=dt.date(1950 + k % 50, 1 + k % 12, 1 + k % 28),
            ),
        )
    return index


def test_match_finds_the_person_under_another_spelling() -> None:
    index = _index()
    query = PersonRecord(
        "h2-9", source="H2", full_name="Zhang Xiaoming", birth_date=BORN, phone="13700001111"
    )
    found = index.match(query)
    assert found[0].person_id == "P1"
    assert found[0].grade in ("certain", "probable")
    assert found[0].record_id == "h1-1"
    assert {e.field for e in found[0].evidence} >= {"family_name", "given_name", "birth_date"}


def test_match_by_id_number_alone_is_certain() -> None:
    found = _index().match(PersonRecord("q", prc_id=ZHANG.prc_id, full_name="Cheung Hsiao-ming"))
    assert found[0].person_id == "P1" and found[0].grade == "certain"


def test_no_candidate_for_a_stranger() -> None:
    assert _index().match(PersonRecord("q", full_name="赵云", birth_date=dt.date(2001, 1, 1))) == []


def test_remove_and_update() -> None:
    index = _index()
    query = PersonRecord("q", full_name="李娜", birth_date=dt.date(1990, 2, 3), phone="13700002222")
    assert index.match(query)[0].person_id == "P2"
    index.remove("h1-2")
    assert all(c.person_id != "P2" for c in index.match(query))
    assert index.person_count == 201
    index.update("P2", LI)
    index.update("P3", LI)  # the record moved to another person (an unmerge)
    assert index.match(query)[0].person_id == "P3"
    assert index.person_of("h1-2") == "P3"
    with pytest.raises(YilianError):
        index.remove("nope")
    with pytest.raises(YilianError):
        index.add("P9", LI)


def test_a_record_is_not_its_own_candidate() -> None:
    assert all(c.record_id != ZHANG.record_id for c in _index().match(ZHANG))


def test_best_record_per_person() -> None:
    index = _index()
    index.add("P1", replace(ZHANG, record_id="h3-1", source="H3", full_name="ZHANG XIAO MING"))
    found = index.match(PersonRecord("q", full_name="张晓明", birth_date=BORN))
    assert [c.person_id for c in found].count("P1") == 1


def test_build_equals_adding_one_by_one() -> None:
    items = [("P1", ZHANG), ("P2", LI)]
    built = MatchIndex.build(items)
    added = MatchIndex()
    for person, record in items:
        added.add(person, record)
    query = PersonRecord("q", full_name="Li Na", birth_date=dt.date(1990, 2, 3))
    assert built.match(query) == added.match(query)
    assert len(built) == 2 and next(iter(built.features())).record_id == "h1-1"


def test_many_additions_trigger_a_rebuild_that_keeps_everything() -> None:
    index = MatchIndex()
    for k in range(60_000 // 100):
        index.add(
            f"P{k}",
            PersonRecord(
                f"r{k}",
                full_name="陈静",
                birth_date=dt.date(1960 + k % 40, 1 + k % 12, 1 + k % 27),
                phone=f"139{k:08d}",
            ),
        )
    index._rebuild()  # what add() does past its threshold
    found = index.match(PersonRecord("q", full_name="陈静", phone=f"139{123:08d}"))
    assert found[0].person_id == "P123"
