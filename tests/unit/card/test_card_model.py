"""The card's pure rules: the state machine, card numbers, the register CSV. No database."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest

from yilian.card.model import (
    TERMINAL,
    TRANSITIONS,
    Action,
    CardStatus,
    Refusal,
    RegisterRow,
    mask,
    next_status,
    parse_card_number,
    platform_card_number,
    read_register,
    resident_card_number,
)
from yilian.kernel import prc_id
from yilian.kernel.errors import Category, YilianError

RID = prc_id.generate("330502", dt.date(1980, 5, 17), "female", 42)
MALE = prc_id.generate("330502", dt.date(1990, 1, 1), "male", 123)


def _error(fn: object, *args: object, **kwargs: object) -> YilianError:
    assert callable(fn)
    with pytest.raises(YilianError) as info:
        fn(*args, **kwargs)
    return info.value


# --------------------------------------------------------------------------- state machine


@pytest.mark.parametrize(
    "start,action,end",
    [
        (CardStatus.ISSUED, Action.ACTIVATE, CardStatus.ACTIVE),
        (CardStatus.ACTIVE, Action.REPORT_LOST, CardStatus.LOST),
        (CardStatus.ISSUED, Action.REPORT_LOST, CardStatus.LOST),
        (CardStatus.LOST, Action.RESUME, CardStatus.ACTIVE),
        (CardStatus.ACTIVE, Action.SUSPEND, CardStatus.SUSPENDED),
        (CardStatus.SUSPENDED, Action.RESUME, CardStatus.ACTIVE),
        (CardStatus.LOST, Action.REPLACE, CardStatus.REPLACED),
        (CardStatus.ACTIVE, Action.REPLACE, CardStatus.REPLACED),
        (CardStatus.SUSPENDED, Action.REVOKE, CardStatus.REVOKED),
        (CardStatus.LOST, Action.REVOKE, CardStatus.REVOKED),
    ],
)
def test_allowed_transitions(start: CardStatus, action: Action, end: CardStatus) -> None:
    assert next_status(start, action) is end


def test_every_illegal_transition_is_a_conflict_that_names_the_state() -> None:
    for status, action in itertools.product(CardStatus, [a for a in Action if a is not Action.ISSUE]):
        allowed, _ = TRANSITIONS[action]
        if status in allowed:
            continue
        err = _error(next_status, status, action)
        assert err.category is Category.CONFLICT
        assert err.message.startswith(f"cannot {action.value.replace('-', ' ')} a card that is")


def test_terminal_states_never_change_and_suspended_cards_are_not_replaced() -> None:
    for status, action in itertools.product(TERMINAL, [a for a in Action if a is not Action.ISSUE]):
        assert "can no longer change" in _error(next_status, status, action).message
    assert "resume it first" in _error(next_status, CardStatus.SUSPENDED, Action.REPLACE).message
    assert _error(next_status, CardStatus.ACTIVE, Action.ISSUE).category is Category.INVALID


# --------------------------------------------------------------------------- card numbers


def test_the_first_card_of_an_id_holder_is_the_id_number() -> None:
    assert resident_card_number(RID, 1) == RID
    number = parse_card_number(RID.lower())
    assert (number.value, number.kind, number.sequence, number.resident_id) == (RID, "resident-id", 1, RID)


def test_later_cards_of_an_id_holder_carry_an_issue_sequence() -> None:
    assert resident_card_number(RID, 2) == f"{RID}-02"
    assert resident_card_number(RID, 99) == f"{RID}-99"
    assert _error(resident_card_number, RID, 100).category is Category.CONFLICT
    number = parse_card_number(f"{RID}-07")
    assert (number.kind, number.sequence, number.resident_id) == ("resident-id", 7, RID)
    assert "02-99" in _error(parse_card_number, f"{RID}-01").message
    # A legacy 15-digit ID number on a card is normalised to its 18-character form.
    legacy = MALE[:6] + MALE[8:17]
    assert parse_card_number(legacy).value == MALE


def test_platform_numbers_cannot_be_id_numbers_and_carry_a_mod_11_2_check() -> None:
    number = platform_card_number(123456789012345)
    first17 = "00123456789012345"
    assert number == first17 + prc_id.check_character(first17)
    parsed = parse_card_number(number)
    assert (parsed.kind, parsed.resident_id) == ("platform", None)
    drawn = {platform_card_number() for _ in range(200)}
    assert len(drawn) == 200 and all(n.startswith("00") and len(n) == 18 for n in drawn)
    assert all(parse_card_number(n).kind == "platform" for n in drawn)
    # Every single-digit slip is caught by the check character.
    for i in range(2, 17):
        slipped = number[:i] + str((int(number[i]) + 1) % 10) + number[i + 1 :]
        assert "bad check character" in _error(parse_card_number, slipped).message
    assert "no issue sequence" in _error(parse_card_number, number + "-02").message


@pytest.mark.parametrize(
    "value,says",
    [
        ("", "empty"),
        ("1234567", "18 characters"),
        (RID[:17] + ("1" if RID[17] != "1" else "2"), "bad check character"),
        (RID[:6] + "19801340" + RID[14:], "not a real date"),
        ("0012345678901234A5", "must be digits"),
    ],
)
def test_malformed_numbers_say_what_is_wrong_without_repeating_them(value: str, says: str) -> None:
    err = _error(parse_card_number, value)
    assert err.category is Category.INVALID and says in err.message
    assert not value or value not in err.message


def test_masked_numbers_hide_the_person() -> None:
    assert mask(f"{RID}-02") == f"{RID[:6]}********{RID[-4:]}-02"
    assert RID not in repr(parse_card_number(RID))


# --------------------------------------------------------------------------- the register CSV


def _read(text: str) -> list[RegisterRow | Refusal]:
    return list(read_register(text.splitlines(keepends=True), today=dt.date(2026, 12, 3)))


def test_register_rows_are_validated_and_normalised() -> None:
    rows = _read(
        "\ufeffname,sex,birth_date,id_number,phone,address,district,residence,extra\n"
        f"张伟,男,19900101,{MALE.lower()},138-0013-8000,吴兴区,330502,城镇,ignored\n"
        "李小宝,F,2026/11/01,,,,330503,农村,\n"
    )
    first, second = rows
    assert isinstance(first, RegisterRow) and isinstance(second, RegisterRow)
    assert (first.line, first.sex, first.id_number, first.phone, first.residence) == (
        2,
        "male",
        MALE,
        "13800138000",
        "urban",
    )
    assert (second.sex, second.birth_date, second.id_number, second.residence) == (
        "female",
        dt.date(2026, 11, 1),
        None,
        "rural",
    )
    assert MALE not in repr(first)


@pytest.mark.parametrize(
    "row,says",
    [
        (f"张伟,女,1990-01-01,{MALE},,,330502,urban", "encodes sex male"),
        (f"张伟,男,1990-01-02,{MALE},,,330502,urban", "differs from birth_date"),
        (
            f"张伟,男,1990-01-01,{MALE[:17]}{'1' if MALE[17] != '1' else '2'},,,330502,urban",
            "bad check character",
        ),
        ("张伟,男,1990-01-01,,,,330502,", "missing required field: residence"),
        (",,1990-01-01,,,,330502,urban", "missing required fields: name, sex"),
        ("张伟,男,1990-13-01,,,,330502,urban", "is not a date"),
        ("张伟,男,2027-01-01,,,,330502,urban", "in the future"),
        ("张伟,男,1990-01-01,,12345,,330502,urban", "phone"),
        ("张伟,男,1990-01-01,,,,吴兴区,urban", "6-digit administrative division"),
        ("张伟,男,1990-01-01,,,,330502,suburb", "residence 'suburb'"),
    ],
)
def test_refused_rows_say_why(row: str, says: str) -> None:
    (refusal,) = _read("name,sex,birth_date,id_number,phone,address,district,residence\n" + row + "\n")
    assert isinstance(refusal, Refusal) and refusal.line == 2
    assert says in refusal.reason


def test_duplicates_within_a_file_are_refused_with_the_first_line() -> None:
    header = "name,sex,birth_date,id_number,phone,address,district,residence\n"
    rows = _read(
        header
        + f"张伟,男,1990-01-01,{MALE},,,330502,urban\n"
        + "李四,男,2000-01-01,,13800138000,,330502,urban\n"
        + f"张伟,男,1990-01-01,{MALE},,,330503,rural\n"
        + "李四,男,2000-01-01,,13800138000,,330502,urban\n"
        + "李四,男,2000-01-01,,13800138001,,330502,urban\n"
    )
    refusals = {r.line: r.reason for r in rows if isinstance(r, Refusal)}
    assert refusals == {
        4: "duplicate: the same resident as line 2",
        5: "duplicate: the same resident as line 3",
    }


def test_a_file_without_the_required_columns_is_refused_whole() -> None:
    err = _error(_read, "name,birth_date\n张伟,1990-01-01\n")
    assert err.category is Category.INVALID and "sex, district, residence" in err.message
