"""A lost, suspended, replaced or revoked card finds nobody, on SQLite and PostgreSQL: every FHIR
path that resolves a patient or person by a card number — search (direct, chained, ``:identifier``
references, under ``_revinclude``, conditional update), ``$ihe-pix``, ``Person``, ``$match`` —
refuses with the card's state, as the front desk does (409 lost/suspended, 410 replaced/revoked),
while the holder's ID number keeps finding them."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from tests.integration.card.conftest import MRN_A, make_patient, resident_id
from tests.support.fhir_calls import Call, call, ids
from yilian import card
from yilian.card.model import platform_card_number
from yilian.db import UnitOfWork
from yilian.fhir import FhirContext
from yilian.kernel import naming

ACTOR = "staff:desk-2"
HC = naming.HEALTH_CARD


def _active_card(uow: UnitOfWork, ctx: FhirContext, seq: int, *, prc: bool = True) -> tuple[str, str]:
    rid = resident_id(born=dt.date(1970, 2, 3), sex="female", seq=seq)
    patient = make_patient(uow, ctx, born="1970-02-03", prc=rid if prc else None, mrn=(MRN_A, f"LK-{seq}"))
    view = card.issue_card(uow, ctx, patient_id=patient, actor=ACTOR, reason="walk-in")
    card.activate_card(uow, ctx, card_no=view.card_no, actor=ACTOR, reason="ID checked")
    return patient, view.card_no


def _observation(uow: UnitOfWork, ctx: FhirContext, patient: str) -> str:
    obs = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]},
        "subject": {"reference": f"Patient/{patient}"},
    }
    created = call(uow, ctx, "POST", "Observation", obs)
    assert created.status == 201, created
    return str(created.json["id"])


def refused(r: Call, status: int, reason: str) -> str:
    assert r.status == status, r
    assert r.json["resourceType"] == "OperationOutcome"
    issue = r.json["issue"][0]
    assert issue["code"] == "business-rule"
    assert issue["details"]["coding"] == [{"system": naming.CARD_REFUSAL, "code": reason}]
    return str(issue["diagnostics"])


def _match(patient_identifier: dict[str, str]) -> dict[str, Any]:
    return {
        "resourceType": "Parameters",
        "parameter": [
            {
                "name": "resource",
                "resource": {
                    "resourceType": "Patient",
                    "name": [{"family": "王", "given": ["芳"]}],
                    "birthDate": "1970-02-03",
                    "gender": "female",
                    "identifier": [patient_identifier],
                },
            }
        ],
    }


def pix_targets(parameters: dict[str, Any]) -> list[dict[str, Any]]:
    return [p["valueIdentifier"] for p in parameters["parameter"] if p["name"] == "targetIdentifier"]


def lookups(card_no: str) -> list[tuple[str, str, Any]]:
    """Every path that resolves by a card number: (method, url, body)."""
    token = f"{HC}|{card_no}"
    return [
        ("GET", f"Patient?identifier={token}", None),
        ("GET", f"Patient?identifier=http://loinc.org|x,{token}", None),  # one of OR-ed values
        ("GET", f"Patient?identifier={token}&_revinclude=Observation:subject", None),
        ("GET", f"Observation?subject:Patient.identifier={token}", None),  # chained
        ("GET", f"Observation?patient.identifier={token}&_include=Observation:subject", None),
        ("GET", f"Encounter?_has:Observation:encounter:subject:Patient.identifier={token}", None),
        ("GET", f"Observation?subject:identifier={token}", None),  # a Reference.identifier
        ("GET", f"Patient/$ihe-pix?sourceIdentifier={token}", None),
        ("GET", f"Person?identifier={token}", None),
        ("POST", "Patient/$match", _match({"system": HC, "value": card_no})),
    ]


def test_a_lost_card_is_refused_on_every_path_and_found_again_once_resumed(
    uow: UnitOfWork, cctx: FhirContext
) -> None:
    patient, card_no = _active_card(uow, cctx, 402)
    _observation(uow, cctx, patient)
    for method, url, body in lookups(card_no):
        r = call(uow, cctx, method, url, body)
        assert r.status == 200, (url, r)
    assert ids(call(uow, cctx, "GET", f"Patient?identifier={HC}|{card_no}").json) == {patient}

    card.report_lost(uow, cctx, card_no=card_no, actor=ACTOR, reason="lost on the bus")
    for method, url, body in lookups(card_no):
        message = refused(call(uow, cctx, method, url, body), 409, "card-lost")
        assert "reported lost on" in message and card_no not in message, url
    # The legacy 15-digit form of the number names the same card.
    legacy = card_no[:6] + card_no[8:17]
    refused(call(uow, cctx, "GET", f"Patient?identifier={HC}|{legacy}"), 409, "card-lost")
    # A conditional update keyed on the lost card is refused too.
    put = call(
        uow,
        cctx,
        "PUT",
        f"Patient?identifier={HC}|{card_no}",
        {"resourceType": "Patient", "name": [{"family": "王"}]},
    )
    refused(put, 409, "card-lost")

    # Losing the card does not withdraw the ID number, which is the same digits.
    assert ids(call(uow, cctx, "GET", f"Patient?identifier={naming.PRC_RESIDENT_ID}|{card_no}").json) == {
        patient
    }
    assert patient in ids(call(uow, cctx, "GET", f"Patient?identifier={card_no}").json)
    pix = call(uow, cctx, "GET", f"Patient/$ihe-pix?sourceIdentifier={naming.PRC_RESIDENT_ID}|{card_no}")
    assert pix.status == 200, pix
    # The cross-reference offers the numbers to find the holder by now: not the lost card's.
    offered = {(i["system"], i["value"]) for i in pix_targets(pix.json)}
    assert (naming.PRC_RESIDENT_ID, card_no) in offered and (HC, card_no) not in offered
    # ":not" resolves nobody by the number.
    assert call(uow, cctx, "GET", f"Patient?identifier:not={HC}|{card_no}").status == 200

    card.resume_card(uow, cctx, card_no=card_no, actor=ACTOR, reason="found at home")
    assert ids(call(uow, cctx, "GET", f"Patient?identifier={HC}|{card_no}").json) == {patient}
    pix = call(uow, cctx, "GET", f"Patient/$ihe-pix?sourceIdentifier={HC}|{card_no}").json
    assert (HC, card_no) in {(i["system"], i["value"]) for i in pix_targets(pix)}


def test_replaced_and_revoked_cards_are_gone_and_the_new_card_finds_the_holder(
    uow: UnitOfWork, cctx: FhirContext
) -> None:
    patient, old = _active_card(uow, cctx, 404)
    card.report_lost(uow, cctx, card_no=old, actor=ACTOR, reason="lost")
    new = card.replace_card(uow, cctx, card_no=old, actor=ACTOR, reason="new card").card_no
    assert new == f"{old}-02"
    message = refused(call(uow, cctx, "GET", f"Patient?identifier={HC}|{old}"), 410, "card-replaced")
    assert "use the replacement card" in message and new not in message and "-02" in message
    refused(call(uow, cctx, "GET", f"Patient/$ihe-pix?sourceIdentifier={HC}|{old}"), 410, "card-replaced")
    # The replacement, issued and not yet activated, names its holder.
    assert ids(call(uow, cctx, "GET", f"Patient?identifier={HC}|{new}").json) == {patient}
    assert ids(call(uow, cctx, "GET", f"Patient?identifier={new}").json) == {patient}
    # PIX by the new card offers it, and not the retired one (kept on the Patient as "old").
    pix = call(uow, cctx, "GET", f"Patient/$ihe-pix?sourceIdentifier={HC}|{new}").json
    cards = [i["value"] for i in pix_targets(pix) if i["system"] == HC]
    assert cards == [new]

    card.report_lost(uow, cctx, card_no=new, actor=ACTOR, reason="lost again")
    # Without a system, a "-NN" number can only be a card: judged as one.
    refused(call(uow, cctx, "GET", f"Patient?identifier={new}"), 409, "card-lost")
    card.revoke_card(uow, cctx, card_no=new, actor=ACTOR, reason="moved away")
    for method, url, body in lookups(new):
        refused(call(uow, cctx, method, url, body), 410, "card-revoked")


def test_a_suspended_platform_card_is_refused_with_or_without_its_system(
    uow: UnitOfWork, cctx: FhirContext
) -> None:
    patient, card_no = _active_card(uow, cctx, 406, prc=False)
    assert card_no.startswith("00")
    assert ids(call(uow, cctx, "GET", f"Patient?identifier={card_no}").json) == {patient}
    card.suspend_card(uow, cctx, card_no=card_no, actor=ACTOR, reason="identity being checked")
    for url in (f"Patient?identifier={HC}|{card_no}", f"Patient?identifier={card_no}"):
        assert "suspended by the issuer" in refused(call(uow, cctx, "GET", url), 409, "card-suspended")


@pytest.mark.parametrize("lookup_guard", [True, False])
def test_numbers_the_card_system_never_issued_are_left_to_the_search(
    uow: UnitOfWork, cctx: FhirContext, lookup_guard: bool
) -> None:
    """A hospital's feed may carry a health card number of its own: nothing to refuse."""
    number = platform_card_number(987_654_321)
    body = {
        "resourceType": "Patient",
        "name": [{"family": "赵"}],
        "identifier": [{"system": HC, "value": number}, {"system": MRN_A, "value": "LK-407"}],
    }
    created = call(uow, cctx, "POST", "Patient", body)
    assert created.status == 201, created
    ctx = cctx if lookup_guard else FhirContext(base_url=cctx.base_url)
    assert ids(call(uow, ctx, "GET", f"Patient?identifier={HC}|{number}").json) == {created.json["id"]}
