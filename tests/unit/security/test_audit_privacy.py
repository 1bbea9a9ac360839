"""The audit scrubber masks the value of every sensitive identifier system — the ones the FHIR
store seals — wherever it meets ``<system>|<value>``: typed, URL-encoded as the audit middleware
records queries, or as JSON; and the phone and telecom search parameters whatever they hold."""

from __future__ import annotations

import datetime as dt
from urllib.parse import urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from yilian.fhir.store.sealing import SENSITIVE_IDENTIFIER_SYSTEMS
from yilian.kernel import naming, prc_id
from yilian.security.audit.model import AuditRecord
from yilian.security.audit.privacy import mask_all, scrub

RID = prc_id.generate("110105", dt.date(1949, 12, 31), "male", 1)

# A valid value of each sensitive system (and of passports of another state).
VALUES = {
    naming.PRC_RESIDENT_ID: RID,
    naming.HEALTH_CARD: f"{RID}-02",
    naming.PASSPORT_CHN: "E12345678",
    naming.HK_MACAO_PERMIT: "H1234567890",
    naming.TAIWAN_PERMIT: "87654321",
    naming.PHONE: "13912345678",
    naming.passport_system("USA"): "X79835501X",
}


def test_every_sensitive_system_is_covered_here() -> None:
    assert set(SENSITIVE_IDENTIFIER_SYSTEMS) <= set(VALUES)


@pytest.mark.parametrize("system", sorted(VALUES))
def test_values_after_a_sensitive_system_are_masked_in_every_spelling(system: str) -> None:
    value = VALUES[system]
    for text in (
        f"Patient?identifier={system}|{value}",
        "Patient?" + urlencode([("identifier", f"{system}|{value}"), ("_count", "10")]),
        f"Person?identifier={system}%7c{value}&_elements=id",
        f"Patient/$ihe-pix?sourceIdentifier={system}|{value}",
        f"Observation?subject:Patient.identifier=http://loinc.org|x,{system}|{value}",
        f'refused: {{"system": "{system}", "value": "{value}"}}',
        f'{{"value":"{value}","system":"{system}"}}',
    ):
        masked = scrub(text)
        assert masked is not None and value not in masked, masked
        assert value[-2:] in masked and "*" in masked  # the kind of lookup stays visible


def test_the_shape_of_the_query_is_kept() -> None:
    query = "Patient?" + urlencode(
        [("identifier", f"{naming.PASSPORT_CHN}|E12345678"), ("birthdate", "1980-05-17")]
    )
    assert scrub(query) == query.replace("E12345678", "E******78")
    card = f"Patient?identifier={naming.HEALTH_CARD}|{RID}-02"
    assert scrub(card) == f"Patient?identifier={naming.HEALTH_CARD}|{RID[:6]}********{RID[-4:]}-02"
    permit = f"Patient?identifier={naming.TAIWAN_PERMIT}|87654321"
    assert scrub(permit) == f"Patient?identifier={naming.TAIWAN_PERMIT}|******21"


def test_phone_and_telecom_parameters_are_masked_landlines_too() -> None:
    for text in (
        "Patient?phone=0571-88886666",
        "Patient?" + urlencode([("telecom", "phone|0571-88886666")]),
        "Patient?_count=5&phone=057188886666",
    ):
        masked = scrub(text)
        assert masked is not None and "88886666" not in masked, masked
    assert scrub("Patient?telecom=%2B86%20139-1234-5678") == "Patient?telecom=139****5678"


def test_other_systems_and_values_are_left_alone() -> None:
    for text in (
        f"Patient?identifier={naming.mrn_system('hosp-a')}|E12345678",
        "Observation?code=http://loinc.org|8480-6&date=ge2026-01-01",
        f"Patient?identifier={naming.INSURANCE_EMPLOYEE}|3305A0012345",
    ):
        assert scrub(text) == text


def test_an_audit_record_stores_the_masked_query_and_message() -> None:
    query = "Patient?" + urlencode([("identifier", f"{naming.HK_MACAO_PERMIT}|H1234567890")])
    record = AuditRecord(
        action="E",
        subtype="search-type",
        agent_kind="system",
        agent_id="his",
        query=query,
        outcome_desc=f"no Patient with {naming.TAIWAN_PERMIT}|87654321",
        details=(("identifier", f"{naming.passport_system('USA')}|X79835501X"),),
    )
    assert record.query is not None and "H1234567890" not in record.query
    assert record.outcome_desc is not None and "87654321" not in record.outcome_desc
    assert "X79835501X" not in record.details[0][1]


def test_the_platforms_ids_are_left_whole_numbers_anywhere_else_are_masked() -> None:
    """The platform's ids are time-ordered UUIDs whose hex groups can spell a mobile number; the
    patient an audit row names must stay readable. Anywhere else a number is masked, even in
    an id a client chose or glued to other text."""
    uuid_text = (
        "issued card 01a249cc-a1b9-7db5-8891-e8807dc23e4a to Patient/01a249cc-a153-7452-9389-2335b10f6c87"
    )
    assert scrub(uuid_text) == uuid_text
    # The users' and clients' ids the platform draws, whose random hex can spell a number too
    # (a CLI test once failed on "u-17659336060f").
    drawn = "revoked user he.ping (u-17659336060f); client yl-13912345678abcd0 revoked"
    assert scrub(drawn) == drawn
    for text, masked in (
        ("user u-13912345678", "user u-139****5678"),  # not one the platform drew: too short
        ("Patient/p13912345678", "Patient/p139****5678"),
        (
            "Patient/13912345678-0000-0000-0000-000000000000",
            "Patient/139****5678-0000-0000-0000-000000000000",
        ),
        ("tel13912345678.", "tel139****5678."),
        ("Patient?telecom=phone%7C13912345678", "Patient?telecom=phone%7C139****5678"),
        ("note: 139-1234-5678 (mobile)", "note: 139****5678 (mobile)"),
        (
            "Patient/01a249cc-a153-7452-9389-2335b10f6c87 called 13912345678",
            "Patient/01a249cc-a153-7452-9389-2335b10f6c87 called 139****5678",
        ),
    ):
        assert scrub(text) == masked, text
    glued = scrub(f"holder x{RID}y, card {RID}-02")
    assert glued is not None and RID not in glued


# Pieces of what audited text is made of, sensitive or not: the quick look scrub takes must
# never pass over text the full masking would change, however the pieces fall together.
_PIECES = [
    *VALUES,
    *VALUES.values(),
    "|", "%7C", "%7c", "?", "&", "=", ",", " ", "-", "+86 ", "%2B86", '"', ":",
    '"system": "', '", "value": "', '"value":"', '","system":"',
    "phone", "telecom", "phone=", "telecom:exact=", "sms|", "Patient/", "Observation?code=",
    "8310-5", "1", "3", "9", "0", "12", "138", "0013", "8000", "2", "22000000", "19491231", "110105", "X", "E",
    "u-17659336060f", "0190b2a4-a153-7452-9389-3f2c2a1b0c9d",
]  # fmt: skip


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=12).map("".join))
def test_the_quick_look_never_passes_over_what_masking_would_change(text: str) -> None:
    assert scrub(text) == mask_all(text)


def test_text_with_nothing_to_mask_is_returned_as_it_is() -> None:
    for text in ("Patient/bench-17", "Observation?patient=p-1&code=8310-5&_count=20", "Patient?name=张伟"):
        assert scrub(text) is text
