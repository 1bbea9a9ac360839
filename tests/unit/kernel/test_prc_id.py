"""PRC resident identity numbers (GB 11643-1999)."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from yilian.kernel import prc_id
from yilian.kernel.errors import Category, YilianError

TODAY = dt.date(2026, 12, 3)

# The algorithm as published (ISO 7064 MOD 11-2): weights 2^(17-i) mod 11 for positions 1-17,
# then the check character is looked up from the weighted sum mod 11. Written out here rather
# than reused from the module, so the test checks the module against the standard.
PUBLISHED_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
PUBLISHED_CHECK = {0: "1", 1: "0", 2: "X", 3: "9", 4: "8", 5: "7", 6: "6", 7: "5", 8: "4", 9: "3", 10: "2"}


def published_check(first17: str) -> str:
    return PUBLISHED_CHECK[sum(int(d) * w for d, w in zip(first17, PUBLISHED_WEIGHTS, strict=True)) % 11]


def with_check(first17: str) -> str:
    return first17 + published_check(first17)


# Examples from the text of GB 11643-1999 (a Beijing and a Guangdong number) and a Huzhou one.
KNOWN = [
    ("11010519491231002", "110105", dt.date(1949, 12, 31), "female"),
    ("44052418800101001", "440524", dt.date(1880, 1, 1), "male"),
    ("33050219850613423", "330502", dt.date(1985, 6, 13), "male"),
    ("33052320200229008", "330523", dt.date(2020, 2, 29), "female"),
]


def test_published_weights_are_powers_of_two_mod_11() -> None:
    assert tuple(2 ** (17 - i) % 11 for i in range(17)) == PUBLISHED_WEIGHTS


@pytest.mark.parametrize(("first17", "division", "born", "sex"), KNOWN)
def test_known_numbers_parse(first17: str, division: str, born: dt.date, sex: str) -> None:
    number = with_check(first17)
    assert prc_id.check_character(first17) == number[-1]
    parsed = prc_id.parse(number, today=TODAY)
    assert parsed.number == number
    assert parsed.division == division
    assert parsed.birth_date == born
    assert parsed.sex == sex
    assert parsed.order_code == first17[14:]


def test_the_standards_example_has_check_character_x() -> None:
    assert with_check("11010519491231002") == "11010519491231002X"
    assert prc_id.check_character("11010519491231002") == "X"


def test_lowercase_x_and_surrounding_whitespace_are_accepted() -> None:
    parsed = prc_id.parse("  11010519491231002x \n", today=TODAY)
    assert parsed.number == "11010519491231002X"


def test_legacy_15_digit_numbers_are_converted() -> None:
    parsed = prc_id.parse("110105491231002", today=TODAY)
    assert parsed.number == with_check("11010519491231002")
    assert parsed.birth_date == dt.date(1949, 12, 31)
    assert parsed.sex == "female"


def test_is_valid() -> None:
    good = with_check("33050219850613423")
    assert prc_id.is_valid(good, today=TODAY)
    assert not prc_id.is_valid(good[:17] + ("0" if good[-1] != "0" else "1"), today=TODAY)
    assert not prc_id.is_valid("not a number", today=TODAY)


def _error(value: str, today: dt.date = TODAY) -> YilianError:
    with pytest.raises(YilianError) as caught:
        prc_id.parse(value, today=today)
    assert caught.value.category is Category.INVALID
    # The number is sensitive: messages describe the problem without repeating it.
    assert not value.strip() or value.strip() not in caught.value.message
    return caught.value


@pytest.mark.parametrize("value", ["", "1101051949123100", "11010519491231002X1", "1234567890123456"])
def test_wrong_length(value: str) -> None:
    error = _error(value)
    assert "18 characters" in error.message
    assert f"got {len(value)}" in error.message


def test_non_digit_says_which_character() -> None:
    error = _error("1101A519491231002X")
    assert "character 5 is not a digit" in error.message


def test_full_width_digits_are_not_digits() -> None:
    error = _error("１10105194912310021")
    assert "character 1 is not a digit" in error.message


def test_bad_last_character() -> None:
    error = _error("11010519491231002Y")
    assert "last character must be a digit or X" in error.message


def test_bad_check_character_says_which_was_expected() -> None:
    good = with_check("33050219850613423")
    wrong = "0" if good[-1] != "0" else "1"
    error = _error(good[:17] + wrong)
    assert f"expected {good[-1]!r}" in error.message
    assert f"bad check character {wrong!r}" in error.message


def test_swapped_digits_are_caught_by_the_check_character() -> None:
    good = with_check("33050219850613423")
    swapped = good[:14] + good[15] + good[14] + good[16:]
    assert swapped != good
    assert "check character" in _error(swapped).message


@pytest.mark.parametrize(
    ("first17", "shown"),
    [
        ("11010519990230002", "1999-02-30"),
        ("11010519991301002", "1999-13-01"),
        ("11010520230229002", "2023-02-29"),
        ("11010519990100002", "1999-01-00"),
    ],
)
def test_impossible_birth_date(first17: str, shown: str) -> None:
    error = _error(with_check(first17))
    assert f"birth date {shown}" in error.message
    assert "not a real date" in error.message


def test_birth_date_in_the_future() -> None:
    error = _error(with_check("33050220261204001"))
    assert "2026-12-04 is in the future" in error.message
    assert prc_id.parse(with_check("33050220261203001"), today=TODAY).birth_date == TODAY


def test_birth_date_before_1850() -> None:
    error = _error(with_check("33050218491231001"))
    assert "before 1850" in error.message


def test_legacy_form_errors() -> None:
    assert "not a digit" in _error("11010549123100A").message
    assert "not a real date" in _error("110105490231002").message


def test_check_character_needs_17_digits() -> None:
    with pytest.raises(YilianError):
        prc_id.check_character("1234")
    with pytest.raises(YilianError):
        prc_id.check_character("1101051949123100X")


def test_future_is_judged_on_the_platform_clock_by_default() -> None:
    tomorrow = dt.date.today() + dt.timedelta(days=2)
    number = prc_id.generate("330502", tomorrow, "male", 1)
    with pytest.raises(YilianError, match="in the future"):
        prc_id.parse(number)


def test_generate_makes_valid_numbers() -> None:
    number = prc_id.generate("330502", dt.date(1985, 6, 13), "male", 423)
    assert number == with_check("33050219850613423")


@pytest.mark.parametrize(
    ("division", "sex", "sequence", "message"),
    [
        ("33050", "male", 1, "6 digits"),
        ("33050A", "male", 1, "6 digits"),
        ("330502", "male", 2, "does not encode sex"),
        ("330502", "female", 1, "does not encode sex"),
        ("330502", "male", 1001, "between 0 and 999"),
    ],
)
def test_generate_rejects(division: str, sex: prc_id.Sex, sequence: int, message: str) -> None:
    with pytest.raises(YilianError, match=message):
        prc_id.generate(division, dt.date(1990, 1, 1), sex, sequence)


@given(
    division=st.from_regex(r"\A[1-9][0-9]{5}\Z"),
    born=st.dates(min_value=dt.date(1850, 1, 1), max_value=TODAY),
    sex=st.sampled_from(["male", "female"]),
    half=st.integers(min_value=0, max_value=499),
)
def test_generate_parse_round_trip(division: str, born: dt.date, sex: prc_id.Sex, half: int) -> None:
    sequence = half * 2 + (1 if sex == "male" else 0)
    number = prc_id.generate(division, born, sex, sequence)
    assert number[-1] == published_check(number[:17])
    parsed = prc_id.parse(number, today=TODAY)
    assert (parsed.number, parsed.division, parsed.birth_date, parsed.sex) == (number, division, born, sex)
    assert prc_id.parse(number.lower(), today=TODAY) == parsed
    if 1900 <= born.year <= 1999:
        legacy = number[:6] + number[8:17]
        assert prc_id.parse(legacy, today=TODAY) == parsed


def test_mask() -> None:
    assert prc_id.mask("11010519491231002X") == "110105********002X"
    assert prc_id.mask("110105491231002") == "110105*****1002"
    assert prc_id.mask("12345") == "*****"
    assert prc_id.mask("") == ""


def test_repr_never_shows_the_number() -> None:
    parsed = prc_id.parse("11010519491231002X", today=TODAY)
    assert "11010519491231002X" not in repr(parsed)
    assert "110105********002X" in repr(parsed)
    assert parsed.masked == "110105********002X"


@given(st.text(alphabet="0123456789", min_size=17, max_size=17))
def test_the_check_character_is_the_published_one_for_any_17_digits(first17: str) -> None:
    assert prc_id.check_character(first17) == published_check(first17)
