"""Deterministic rules and the household guard: same valid ID ⇒ same person unless the
demographics contradict; twins and parent/child never reach ``certain``."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

from yilian.kernel import prc_id
from yilian.mpi.matching.matcher import Matcher
from yilian.mpi.matching.model import MatchModel, Thresholds
from yilian.mpi.matching.record import PersonRecord

BORN = dt.date(1988, 5, 6)
ID = prc_id.generate("330502", BORN, "female", 246)
BASE = PersonRecord(
    "a",
    source="H1",
    full_name="欧阳丽华",
    birth_date=BORN,
    sex="female",
    prc_id=ID,
    phone="13912345678",
    address_lines=("吴兴区人民路12号3幢501室",),
    postcode="313000",
    mrn="0001",
)
# A model that would link almost anything: the guards, not the weights, must keep families apart.
EAGER = Matcher(replace(MatchModel.default(), prior=0.3))


def test_same_valid_id_number_is_certain_despite_a_pinyin_name_and_no_phone() -> None:
    other = PersonRecord("b", full_name="OUYANG LI-HUA", prc_id=ID[:6] + ID[8:17], birth_date=BORN)
    s = Matcher().compare_records(BASE, other)
    assert s.grade == "certain"
    assert "same-prc-id" in s.rules


def test_same_id_number_with_a_wholly_different_name_is_not_certain() -> None:
    # A borrowed number (a relative's card): the names share nothing.
    other = PersonRecord("b", full_name="陈建国", prc_id=ID, birth_date=BORN)
    assert EAGER.compare_records(BASE, other).grade != "certain"


def test_same_id_number_with_different_sex_or_far_birth_year_is_not_certain() -> None:
    for other in (
        replace(BASE, record_id="b", sex="male", prc_id=ID),
        replace(BASE, record_id="b", birth_date=dt.date(1950, 5, 6)),
    ):
        s = EAGER.compare_records(BASE, other)
        assert s.grade != "certain", s.rules
        assert "same-prc-id" in s.rules


def test_same_mrn_at_the_same_institution_is_certain() -> None:
    other = replace(BASE, record_id="b", prc_id=None, full_name="Ouyang Lihua")
    assert Matcher().compare_records(BASE, other).grade == "certain"
    elsewhere = replace(other, source="H2")
    assert "same-mrn" not in Matcher().compare_records(BASE, elsewhere).rules


def test_twins_are_never_certain() -> None:
    twin_id = prc_id.generate("330502", BORN, "female", 248)
    twins = [
        replace(BASE, record_id="t1", full_name="欧阳丽娟", prc_id=twin_id, mrn="0002"),
        replace(BASE, record_id="t2", full_name="欧阳丽娟", prc_id=None, mrn=None, source="H2"),
        replace(BASE, record_id="t3", full_name="欧阳明", prc_id=None, mrn=None, source="H2"),
        replace(
            BASE, record_id="t4", full_name="Ouyang Ming", prc_id=None, mrn=None, sex="male", source="H2"
        ),
    ]
    for twin in twins:
        for matcher in (Matcher(), EAGER):
            s = matcher.compare_records(BASE, twin)
            assert s.grade != "certain", (twin.record_id, s.rules)


def test_parent_and_child_with_the_same_name_pattern_are_never_certain() -> None:
    child = replace(
        BASE,
        record_id="c",
        full_name="欧阳丽萍",
        birth_date=dt.date(2015, 9, 1),
        prc_id=None,
        mrn=None,
        source="H2",
    )
    namesake = replace(child, full_name="欧阳丽华")  # even the same name: the birth date differs
    for other in (child, namesake):
        s = EAGER.compare_records(BASE, other)
        assert s.grade != "certain", s.rules


def test_different_valid_id_numbers_are_never_certain() -> None:
    other = replace(
        BASE, record_id="b", prc_id=prc_id.generate("330503", BORN, "female", 2), mrn=None, source="H2"
    )
    s = EAGER.compare_records(BASE, other)
    assert s.grade != "certain"
    assert "different-valid-id-numbers" in s.rules


def test_scores_are_symmetric() -> None:
    other = replace(BASE, record_id="0", full_name="Lihua Ouyang", prc_id=None, mrn=None)
    assert Matcher().compare_records(BASE, other) == Matcher().compare_records(other, BASE)


def test_thresholds_are_configurable() -> None:
    other = replace(BASE, record_id="b", prc_id=None, mrn=None, source="H2", phone=None)
    strict = Matcher(
        MatchModel.default().with_thresholds(Thresholds(certain=0.999999999, probable=0.99999, possible=0.9))
    )
    lax = Matcher(MatchModel.default().with_thresholds(Thresholds(certain=0.5, probable=0.4, possible=0.3)))
    assert strict.compare_records(BASE, other).grade != "certain"
    assert lax.compare_records(BASE, other).grade == "certain"
