"""Comparison levels of dates, ID numbers, phones and whole records."""

from __future__ import annotations

import datetime as dt

import pytest

from yilian.kernel import prc_id
from yilian.mpi.matching.comparison import BIRTH, IDENTIFIER, PHONE, POSTCODE, PRC_ID, compare
from yilian.mpi.matching.dates import date_level
from yilian.mpi.matching.features import prepare
from yilian.mpi.matching.identifiers import normalise_phone, number_level, parse_prc_id
from yilian.mpi.matching.record import Identifier, PersonRecord

ID = prc_id.generate("330502", dt.date(1965, 7, 14), "male", 123)


@pytest.mark.parametrize(
    ("a", "b", "level"),
    [
        (19850312, 19850312, "exact"),
        (19850312, 19851203, "swapped"),
        (19850312, 19850313, "slip"),
        (19850312, 19580312, "slip"),  # neighbours swapped
        (19850312, 19851120, "year"),
        (19850312, 19750312, "slip"),
        (19850312, 19620904, "different"),
        (19850312, 0, None),
    ],
)
def test_date_levels(a: int, b: int, level: str | None) -> None:
    assert date_level(a, b, 0, 0) == level
    assert date_level(b, a, 0, 0) == level


def test_year_only_dates() -> None:
    assert date_level(19850312, 0, 0, 1985) == "year"
    assert date_level(0, 19850312, 1986, 0) == "different"
    assert date_level(0, 0, 1985, 0) is None


def test_legacy_15_digit_id_becomes_the_18_digit_one() -> None:
    legacy = ID[:6] + ID[8:17]
    assert parse_prc_id(legacy) == parse_prc_id(ID)
    assert parse_prc_id(ID.lower()) is not None


def test_id_number_gives_missing_birth_date_and_sex() -> None:
    f = prepare(PersonRecord("r", full_name="张伟", prc_id=ID))
    assert (f.birth, f.sex, f.prc_valid, f.prc_conflict) == (19650714, 1, True, False)


def test_id_number_contradicting_the_record_is_flagged() -> None:
    assert prepare(PersonRecord("r", prc_id=ID, sex="female")).prc_conflict
    assert prepare(PersonRecord("r", prc_id=ID, birth_date=dt.date(1990, 1, 1))).prc_conflict
    # A day/month swap in the record is a typo in the record, not a borrowed number.
    assert not prepare(PersonRecord("r", prc_id=ID, birth_date=dt.date(1965, 7, 14))).prc_conflict


def test_id_number_levels() -> None:
    transposed = ID[:10] + ID[11] + ID[10] + ID[12:]
    assert not parse_prc_id(transposed).valid  # type: ignore[union-attr]
    assert number_level(ID, transposed) == "slip"
    assert number_level(ID, ID) == "exact"
    assert number_level(ID, prc_id.generate("330502", dt.date(1970, 1, 1), "male", 1)) == "different"
    assert number_level(ID, "") is None


def test_phone_normalisation() -> None:
    assert normalise_phone("+86 138-0013-8000") == normalise_phone("13800138000") == "13800138000"
    assert normalise_phone("0086 13800138000") == "13800138000"
    assert normalise_phone("12") == ""


def test_record_comparison_vector() -> None:
    a = PersonRecord(
        "a",
        full_name="张伟",
        birth_date=dt.date(1985, 3, 12),
        prc_id=ID,
        phone="13800138000",
        identifiers=(Identifier("ins", "A123"),),
    )
    b = PersonRecord(
        "b",
        full_name="Zhang Wei",
        birth_date=dt.date(1985, 12, 3),
        prc_id=ID[:6] + ID[8:17],
        phone="13800138001",
        identifiers=(Identifier("ins", "A123"),),
    )
    c = compare(prepare(a), prepare(b))
    assert c.level_name(BIRTH) == "swapped"
    assert c.level_name(PRC_ID) == "exact"
    assert c.level_name(PHONE) == "slip"
    assert c.level_name(IDENTIFIER) == "exact"


def test_postcode_typing_slips_are_their_own_level() -> None:
    def level(a: str, b: str) -> str | None:
        return compare(
            prepare(PersonRecord("a", postcode=a)), prepare(PersonRecord("b", postcode=b))
        ).level_name(POSTCODE)

    assert level("313000", "313000") == "exact"
    assert level("313000", "310300") == "slip"  # neighbours swapped
    assert level("313000", "313001") == "slip"  # one digit wrong
    assert level("313000", "100101") == "different"
    assert level("313000", "") is None


def test_identifiers_compare_only_within_one_system() -> None:
    a = prepare(PersonRecord("a", identifiers=(Identifier("x", "1"),)))
    b = prepare(PersonRecord("b", identifiers=(Identifier("y", "1"),)))
    assert compare(a, b).level_name(IDENTIFIER) is None
