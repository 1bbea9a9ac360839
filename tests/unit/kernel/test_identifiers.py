"""The identifier rules of docs/identifiers.md as data: every platform-defined system of people
accepts what the page documents, refuses the rest saying which identifier and which rule, and
leaves systems we do not define alone."""

from __future__ import annotations

import datetime as dt

import pytest

from yilian.kernel import health_card, identifiers, naming, prc_id
from yilian.kernel.errors import Category, YilianError

RID = prc_id.generate("330502", dt.date(1980, 5, 17), "female", 42)
RID_X = next(
    n
    for s in range(0, 999, 2)
    if (n := prc_id.generate("110105", dt.date(1949, 12, 31), "female", s))[-1] == "X"
)
LEGACY = "330502800517042"  # 15 digits: 330502 + 800517 + order 042
PLATFORM = "00" + "123456789012345"
PLATFORM += prc_id.check_character(PLATFORM)


def refused(system: str, value: str) -> str:
    with pytest.raises(YilianError) as info:
        identifiers.normalise(system, value)
    assert info.value.category is Category.INVALID
    message = info.value.message
    if len(value) >= 3:
        assert value not in message, "a refusal never repeats the value"
    return message


@pytest.mark.parametrize(
    "system,value,stored",
    [
        (naming.PRC_RESIDENT_ID, RID, RID),
        (naming.PRC_RESIDENT_ID, RID_X.lower(), RID_X),
        (naming.PRC_RESIDENT_ID, LEGACY, prc_id.parse(LEGACY).number),
        (naming.HEALTH_CARD, RID, RID),
        (naming.HEALTH_CARD, f"{RID_X.lower()}-02", f"{RID_X}-02"),
        (naming.HEALTH_CARD, f"{RID[:6]} {RID[6:]}", RID),
        (naming.HEALTH_CARD, PLATFORM, PLATFORM),
        (naming.INSURANCE_EMPLOYEE, "3305A0012345", "3305A0012345"),
        (naming.INSURANCE_RESIDENT, "330500123456", "330500123456"),
        (naming.HK_MACAO_PERMIT, "H12345678", "H12345678"),
        (naming.HK_MACAO_PERMIT, "m1234567890", "M1234567890"),
        (naming.TAIWAN_PERMIT, "01234567", "01234567"),
        (naming.PHONE, "13800138000", "13800138000"),
        (naming.PASSPORT_CHN, "E12345678", "E12345678"),
        (naming.passport_system("USA"), "x79835501x", "X79835501X"),  # Synthea's form
        (naming.mrn_system("hosp-1"), "any thing / as assigned", "any thing / as assigned"),
        (naming.INSURANCE_NCMS, "330503-0001 老", "330503-0001 老"),  # as issued: no rule
    ],
)
def test_documented_forms_are_accepted_and_stored_normalised(system: str, value: str, stored: str) -> None:
    assert identifiers.normalise(system, value) == stored


@pytest.mark.parametrize(
    "system,value,says",
    [
        (naming.HEALTH_CARD, "garbage", "health card number must have 18 characters"),
        (naming.HEALTH_CARD, PLATFORM[:17] + ("1" if PLATFORM[17] != "1" else "2"), "bad check character"),
        (naming.HEALTH_CARD, f"{RID}-01", "issue sequence after the hyphen must be 02-99"),
        (naming.INSURANCE_EMPLOYEE, "ab!", "insurance member number: character 1 is not allowed"),
        (naming.INSURANCE_RESIDENT, "12345", "expected 6-20 digits or capital letters, got 5 characters"),
        (
            naming.HK_MACAO_PERMIT,
            "X1",
            "Hong Kong/Macao home-return permit number: character 1 is not allowed",
        ),
        (
            naming.HK_MACAO_PERMIT,
            "H123456789",
            "expected H or M followed by 8 or 10 digits, got 10 characters",
        ),
        (
            naming.TAIWAN_PERMIT,
            "abc",
            "Taiwan compatriot permit number: character 1 is not allowed; expected 8 digits",
        ),
        (naming.PHONE, "12", "mobile phone number: expected 11 digits beginning 13-19"),
        (naming.PHONE, "+8613800138000", "mobile phone number: character 1 is not allowed"),
        (naming.PASSPORT_CHN, "!!", "passport number: character 1 is not allowed"),
        (naming.PRC_RESIDENT_ID, RID[:17] + ("0" if RID[17] != "0" else "1"), "bad check character"),
    ],
)
def test_each_rule_refuses_with_the_identifier_and_the_rule(system: str, value: str, says: str) -> None:
    assert says in refused(system, value)


def test_systems_we_do_not_define_are_left_alone() -> None:
    for system in (
        "http://hl7.org/fhir/sid/us-ssn",
        "http://hl7.org/fhir/sid/passport-USA",
        "urn:oid:2.16.840.1.113883.4.1",
        "https://github.com/synthetichealth/synthea",
        naming.PLATFORM_SID + "v2/HOSP/XX",
    ):
        assert identifiers.rule_for(system) is None
        assert identifiers.normalise(system, "!! anything") == "!! anything"
        identifiers.check_system(system)


def test_family_systems_check_their_tail() -> None:
    identifiers.check_system(naming.passport_system("FRA"))
    identifiers.check_system(naming.mrn_system("91330500MA2B3C4D5E"))
    with pytest.raises(YilianError, match="ISO 3166-1 alpha-3"):
        identifiers.check_system(naming.PLATFORM_SID + "passport/usa")
    with pytest.raises(YilianError, match="institution key"):
        identifiers.check_system(naming.PLATFORM_SID + "mrn/")


def test_a_card_number_knows_whether_it_names_a_card_only() -> None:
    assert not health_card.parse(RID).card_only  # also the holder's ID number
    assert health_card.parse(f"{RID}-03").card_only
    assert health_card.parse(PLATFORM).card_only
    assert repr(health_card.parse(RID)).count(RID) == 0
