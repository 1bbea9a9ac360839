"""Identifier rules (docs/identifiers.md) on every Patient write path, on SQLite and PostgreSQL:
REST create, update and patch, a transaction, a bulk load and an HL7 message are refused with an
OperationOutcome naming the element and the rule; what passes is stored normalised (a legacy
15-digit ID number as its 18-character form, a lower-case ``x`` upper-case)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
import pytest

from tests.support.fhir_calls import call, ids
from yilian.api.wiring import platform_settings
from yilian.db import UnitOfWork
from yilian.exchange.hl7.parse import parse
from yilian.exchange.hl7.to_fhir import to_fhir
from yilian.fhir import FhirContext
from yilian.fhir.interactions.bulk_write import write_many
from yilian.fhir.store.repository import get_current
from yilian.fhir.store.sealing import open_content
from yilian.kernel import naming, prc_id

MRN = naming.mrn_system("rules-hosp")
BORN = dt.date(1975, 3, 9)
# A number whose check character is X, and the legacy 15-digit number of a resident born in 19xx.
RID_X = next(n for s in range(1, 999, 2) if (n := prc_id.generate("330502", BORN, "male", s)).endswith("X"))
LEGACY_OF = prc_id.generate("330502", BORN, "male", 123)
LEGACY = LEGACY_OF[:6] + LEGACY_OF[8:17]


@pytest.fixture
def pctx() -> FhirContext:
    return FhirContext(base_url="http://testserver/fhir", settings=platform_settings({}))


def patient(*idents: tuple[str, str], mrn: str = "R-1", **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "name": [{"family": "林", "given": ["涛"]}],
        "gender": "male",
        "birthDate": BORN.isoformat(),
        "identifier": [{"system": MRN, "value": mrn}, *({"system": s, "value": v} for s, v in idents)],
        **extra,
    }


def stored(uow: UnitOfWork, patient_id: str) -> dict[str, Any]:
    current = get_current(uow.conn, "Patient", patient_id)
    assert current is not None and current.content is not None
    content: dict[str, Any] = orjson.loads(open_content(uow.conn.engine, current.content))
    return content


def values(resource: dict[str, Any], system: str) -> list[str]:
    return [i["value"] for i in resource.get("identifier", []) if i.get("system") == system]


BAD = [
    (naming.HEALTH_CARD, "garbage", "health card number must have 18 characters"),
    (naming.INSURANCE_EMPLOYEE, "ab!", "insurance member number: character 1 is not allowed"),
    (naming.HK_MACAO_PERMIT, "X1", "home-return permit number: character 1 is not allowed"),
    (naming.TAIWAN_PERMIT, "abc", "Taiwan compatriot permit number: character 1 is not allowed"),
    (naming.PHONE, "12", "mobile phone number: expected 11 digits"),
    (naming.PASSPORT_CHN, "!!", "passport number: character 1 is not allowed"),
]


@pytest.mark.parametrize("system,value,says", BAD, ids=[b[0].rsplit("/", 1)[-1] for b in BAD])
def test_a_create_breaking_a_rule_is_refused_at_the_element(
    uow: UnitOfWork, pctx: FhirContext, system: str, value: str, says: str
) -> None:
    r = call(uow, pctx, "POST", "Patient", patient((system, value)))
    assert r.status == 400, r
    issue = r.json["issue"][0]
    assert r.json["resourceType"] == "OperationOutcome" and issue["severity"] == "error"
    assert says in issue["diagnostics"]
    assert issue["expression"] == ["Patient.identifier[1].value"]


def test_every_broken_rule_is_an_issue_of_its_own(uow: UnitOfWork, pctx: FhirContext) -> None:
    body = patient(
        (naming.TAIWAN_PERMIT, "abc"),
        (naming.PRC_RESIDENT_ID, RID_X),
        (naming.PHONE, "12"),
        (naming.PLATFORM_SID + "passport/usa", "X79835501X"),
    )
    r = call(uow, pctx, "POST", "Patient", body)
    assert r.status == 400, r
    assert [i["expression"] for i in r.json["issue"]] == [
        ["Patient.identifier[1].value"],
        ["Patient.identifier[3].value"],
        ["Patient.identifier[4].system"],
    ]
    assert "ISO 3166-1 alpha-3" in r.json["issue"][2]["diagnostics"]


def test_valid_and_foreign_identifiers_are_accepted(uow: UnitOfWork, pctx: FhirContext) -> None:
    body = patient(
        (naming.HK_MACAO_PERMIT, "h12345678"),
        (naming.TAIWAN_PERMIT, "01234567"),
        (naming.PHONE, "13800138000"),
        (naming.INSURANCE_RESIDENT, "330500123456"),
        (naming.INSURANCE_NCMS, "330503-0001"),
        (naming.passport_system("USA"), "X79835501X"),
        ("http://hl7.org/fhir/sid/us-ssn", "999-17-5017"),
        ("urn:oid:1.2.36.146.595.217.0.1", "!! anything a foreign issuer uses"),
        telecom=[{"system": "phone", "value": "0571-8888 6666 ext 12", "use": "work"}],
    )
    r = call(uow, pctx, "POST", "Patient", body)
    assert r.status == 201, r
    assert values(stored(uow, r.json["id"]), naming.HK_MACAO_PERMIT) == ["H12345678"]


def test_update_patch_transaction_bulk_and_hl7_are_checked_alike(uow: UnitOfWork, pctx: FhirContext) -> None:
    created = call(uow, pctx, "POST", "Patient", patient(mrn="R-2"))
    assert created.status == 201, created
    pid = created.json["id"]

    update = call(
        uow, pctx, "PUT", f"Patient/{pid}", {**patient((naming.TAIWAN_PERMIT, "abc"), mrn="R-2"), "id": pid}
    )
    assert update.status == 400 and "Taiwan compatriot permit" in update.json["issue"][0]["diagnostics"], (
        update
    )

    patch = call(
        uow,
        pctx,
        "PATCH",
        f"Patient/{pid}",
        [{"op": "add", "path": "/identifier/-", "value": {"system": naming.PHONE, "value": "12"}}],
        content_type="application/json-patch+json",
    )
    assert patch.status == 400 and "mobile phone number" in patch.json["issue"][0]["diagnostics"], patch

    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": patient(mrn="R-3"), "request": {"method": "POST", "url": "Patient"}},
            {
                "resource": patient((naming.HEALTH_CARD, "garbage"), mrn="R-4"),
                "request": {"method": "POST", "url": "Patient"},
            },
        ],
    }
    tx = call(uow, pctx, "POST", "", bundle)
    assert tx.status == 400 and "health card number" in tx.json["issue"][0]["diagnostics"], tx

    good, bad = patient(mrn="R-5"), patient((naming.PASSPORT_CHN, "!!"), mrn="R-6")
    results = write_many(uow, pctx, [good, bad])
    assert results[0] is None
    assert results[1] is not None and "passport number" in results[1].message
    assert results[1].issues[0].expression == ("Patient.identifier[1].value",)

    message = (
        "MSH|^~\\&|HIS|RULES-HOSP|YILIAN|CITY|20260301080000||ADT^A04^ADT_A01|RULES-1|P|2.5\r"
        "EVN|A04|20260301080000\r"
        "PID|1||H-77^^^RULES-HOSP^MR~!!^^^CHN^PPN||林^涛||19750309|M\r"
    )
    mapping = to_fhir(parse(message.encode()))
    hl7 = call(uow, pctx, "POST", "", mapping.bundle())
    assert hl7.status == 400 and "passport number" in hl7.json["issue"][0]["diagnostics"], hl7


def test_id_numbers_are_stored_normalised_on_every_path(uow: UnitOfWork, pctx: FhirContext) -> None:
    # REST create with a lower-case x, then an update to a legacy 15-digit number.
    created = call(uow, pctx, "POST", "Patient", patient((naming.PRC_RESIDENT_ID, RID_X.lower()), mrn="N-1"))
    assert created.status == 201, created
    pid = created.json["id"]
    assert values(created.json, naming.PRC_RESIDENT_ID) == [RID_X]  # the response shows it
    assert values(stored(uow, pid), naming.PRC_RESIDENT_ID) == [RID_X]
    assert values(call(uow, pctx, "GET", f"Patient/{pid}").json, naming.PRC_RESIDENT_ID) == [RID_X]

    other = call(uow, pctx, "POST", "Patient", patient(mrn="N-2", birthDate="1975-03-09"))
    oid = other.json["id"]
    body = {
        **patient((naming.PRC_RESIDENT_ID, LEGACY), (naming.HEALTH_CARD, f" {LEGACY} "), mrn="N-2"),
        "id": oid,
    }
    updated = call(uow, pctx, "PUT", f"Patient/{oid}", body)
    assert updated.status == 200, updated
    assert values(stored(uow, oid), naming.PRC_RESIDENT_ID) == [LEGACY_OF]
    assert values(stored(uow, oid), naming.HEALTH_CARD) == [LEGACY_OF]
    # Either spelling still finds it.
    for typed in (LEGACY, LEGACY_OF):
        found = call(uow, pctx, "GET", f"Patient?identifier={naming.PRC_RESIDENT_ID}|{typed}")
        assert oid in ids(found.json), found

    # A transaction entry and a bulk load.
    third = prc_id.generate("330502", BORN, "male", 125)
    tx = call(
        uow,
        pctx,
        "POST",
        "",
        {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "resource": patient((naming.PRC_RESIDENT_ID, third[:6] + third[8:17]), mrn="N-3"),
                    "request": {"method": "POST", "url": "Patient"},
                }
            ],
        },
    )
    assert tx.status == 200, tx
    tid = tx.json["entry"][0]["response"]["location"].split("/")[1]
    assert values(stored(uow, tid), naming.PRC_RESIDENT_ID) == [third]

    fourth = prc_id.generate("330502", BORN, "male", 127)
    bulk = {**patient((naming.PRC_RESIDENT_ID, fourth[:6] + fourth[8:17]), mrn="N-4"), "id": "rules-bulk-1"}
    assert write_many(uow, pctx, [bulk]) == [None]
    assert values(stored(uow, "rules-bulk-1"), naming.PRC_RESIDENT_ID) == [fourth]
