"""The patient index's views and the health card lookup under the access decision, over HTTP
with the full platform, on SQLite and PostgreSQL.

Hospital A treats ``pat-hosp-a`` (with an ID number), clinic B treats ``pat-clinic-b``, a
look-alike the index links to the same person automatically; institution C has no reason to
see either. Being the same person is not a reason: B (and resident B) see only B's record of the
person, C sees nothing, A only its own; the platform operator sees the whole person. What is
left out leaves no hint: no ids, identifiers, counts or distinct refusals."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import select

from tests.support.auth import bearer, system_token
from tests.support.fhir_calls import Call, call
from yilian import mpi
from yilian.api.app import create_app
from yilian.api.wiring import platform_settings
from yilian.db import Database, UnitOfWork
from yilian.fhir import FhirContext
from yilian.fhir.store.repository import get_current
from yilian.kernel import naming, prc_id
from yilian.mpi.fhir_map import record_from_patient
from yilian.mpi.matching import prepare
from yilian.mpi.service import current_matcher
from yilian.security.audit.tables import audit_event
from yilian.security.policy import policy_for
from yilian.security.principal import RESIDENT, SYSTEM, Principal
from yilian.security.scopes import parse_scopes
from yilian.security.tokens import issue

ORG_A, ORG_B, ORG_C = "idv-hosp-a", "idv-clinic-b", "idv-clinic-c"
PA, PB = "pat-hosp-a", "pat-clinic-b"
MRN_A, MRN_B = naming.mrn_system(ORG_A), naming.mrn_system(ORG_B)
ID_A = prc_id.generate("110105", dt.date(1980, 5, 12), "female", 2)
# A valid ID number nobody holds: what an unknown card number is answered with.
UNKNOWN_ID = prc_id.generate("110105", dt.date(1975, 1, 1), "female", 8)
ABSENT = (PA, ID_A, f"mrn-{PA}")  # what B, resident B and C must never be shown


@pytest.fixture(scope="module")
def app(db: Database) -> Any:
    return create_app(db, platform_settings())


def send(app: Any, method: str, path: str, headers: dict[str, str], **kwargs: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=120) as c:
            return await c.request(method, path, headers=headers, **kwargs)

    return asyncio.run(go())


def resident(db: Database, patient_id: str) -> dict[str, str]:
    with UnitOfWork(db, write=True) as uow:
        principal = Principal(
            kind=RESIDENT,
            subject=f"resident-{patient_id}",
            scopes=parse_scopes("patient/*.rs"),
            org_id=None,
            patient_keys=frozenset({patient_id}),
        )
        return bearer(issue(uow, principal, lifetime_s=3600).access_token)


@pytest.fixture(scope="module")
def who(db: Database, app: Any) -> dict[str, dict[str, str]]:
    """Tokens by name, after seeding the two look-alikes and their treatment."""
    op = bearer(system_token(db, scopes="system/*.cruds", name="idv operator"))

    def put(body: dict[str, Any]) -> None:
        r = send(app, "PUT", f"/fhir/{body['resourceType']}/{body['id']}", op, json=body)
        assert r.status_code in (200, 201), r.text

    for org in (ORG_A, ORG_B, ORG_C):
        put({"resourceType": "Organization", "id": org, "name": org})
    for pid, org, mrn, extra in (
        (PA, ORG_A, MRN_A, [{"system": naming.PRC_RESIDENT_ID, "value": ID_A}]),
        (PB, ORG_B, MRN_B, []),
    ):
        put(
            {
                "resourceType": "Patient",
                "id": pid,
                "name": [{"family": "王", "given": ["芳"]}],
                "gender": "female",
                "birthDate": "1980-05-12",
                "identifier": [{"system": mrn, "value": f"mrn-{pid}"}, *extra],
                "telecom": [{"system": "phone", "value": "13800138000"}],
            }
        )
        put(
            {
                "resourceType": "Encounter",
                "id": f"enc-{pid}",
                "status": "finished",
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                "subject": {"reference": f"Patient/{pid}"},
                "serviceProvider": {"reference": f"Organization/{org}"},
            }
        )
    with UnitOfWork(db) as uow:
        assert mpi.person_of(uow, PA) == mpi.person_of(uow, PB) is not None, "the index links the look-alikes"
    return {
        "op": op,
        **{
            name: bearer(system_token(db, scopes="system/*.rs", org_id=org, name=f"idv {name}"))
            for name, org in (("a", ORG_A), ("b", ORG_B), ("c", ORG_C))
        },
        "res_a": resident(db, PA),
        "res_b": resident(db, PB),
    }


def person_id(db: Database) -> str:
    with UnitOfWork(db) as uow:
        found = mpi.person_of(uow, PB)
    assert found is not None
    return found


def pix(app: Any, headers: dict[str, str], token: str) -> httpx.Response:
    return send(app, "GET", "/fhir/Patient/$ihe-pix", headers, params={"sourceIdentifier": token})


def person_entries(r: httpx.Response) -> list[dict[str, Any]]:
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["total"] == len(body.get("entry", []))
    return [e["resource"] for e in body.get("entry", [])]


def links(person: dict[str, Any]) -> list[str]:
    return sorted(link["target"]["reference"] for link in person.get("link", []))


def shows_nothing_of_a(r: httpx.Response) -> None:
    for secret in ABSENT:
        assert secret not in r.text, (secret, r.text)


def test_person_shows_only_the_records_the_caller_may_see(
    app: Any, db: Database, who: dict[str, dict[str, str]]
) -> None:
    person = person_id(db)
    whole = person_entries(send(app, "GET", f"/fhir/Person?link=Patient/{PB}", who["op"]))
    assert len(whole) == 1 and links(whole[0]) == [f"Patient/{PB}", f"Patient/{PA}"]
    assert {i["value"] for i in whole[0]["identifier"]} == {ID_A, f"mrn-{PA}", f"mrn-{PB}"}
    for name in ("b", "res_b"):
        for path in (f"/fhir/Person?link=Patient/{PB}", f"/fhir/Person?_id={person}"):
            r = send(app, "GET", path, who[name])
            shown = person_entries(r)
            assert [p["id"] for p in shown] == [person], (name, path)
            assert links(shown[0]) == [f"Patient/{PB}"], (name, path)
            assert shown[0]["identifier"] == [{"system": MRN_B, "value": f"mrn-{PB}"}]
            # "Linked automatically" would tell that another record exists.
            assert [link["assurance"] for link in shown[0]["link"]] == ["level2"]
            shows_nothing_of_a(r)
        # Asked by A's record or A's numbers: nobody, as for a number nobody has.
        for query in (
            f"link=Patient/{PA}",
            f"patient={PA}",
            f"identifier={naming.PRC_RESIDENT_ID}|{ID_A}",
            f"identifier={MRN_A}|mrn-{PA}",
        ):
            r = send(app, "GET", f"/fhir/Person?{query}", who[name])
            assert person_entries(r) == [] and "entry" not in r.json(), (name, query)
    a_view = person_entries(send(app, "GET", f"/fhir/Person?link=Patient/{PA}", who["a"]))
    assert links(a_view[0]) == [f"Patient/{PA}"] and PB not in orjson.dumps(a_view).decode()
    # C has no reason for either record: the person does not exist for it.
    assert person_entries(send(app, "GET", f"/fhir/Person?link=Patient/{PB}", who["c"])) == []
    assert person_entries(send(app, "GET", f"/fhir/Person?_id={person}", who["c"])) == []


def test_reading_a_person_by_id_shows_the_same(db: Database, who: dict[str, dict[str, str]]) -> None:
    # In process: over HTTP the core's short read path answers GET Person/{id} itself (404 for
    # everyone) before the patient index's Person view is asked.
    person = person_id(db)

    def read(principal: Principal) -> Call:
        with UnitOfWork(db) as uow:
            ctx = FhirContext(settings=platform_settings(), policy=policy_for(principal, db))
            return call(uow, ctx, "GET", f"Person/{person}")

    def institution(org: str | None) -> Principal:
        return Principal(kind=SYSTEM, subject=f"idv-{org}", scopes=parse_scopes("system/*.rs"), org_id=org)

    everything = read(institution(None))
    assert everything.status == 200 and links(everything.json) == [f"Patient/{PB}", f"Patient/{PA}"]
    res_b = Principal(
        kind=RESIDENT,
        subject="idv-res-b",
        scopes=parse_scopes("patient/*.rs"),
        org_id=None,
        patient_keys=frozenset({PB}),
    )
    for principal in (institution(ORG_B), res_b):
        r = read(principal)
        assert r.status == 200 and links(r.json) == [f"Patient/{PB}"], r
        text = orjson.dumps(r.json).decode()
        assert all(secret not in text for secret in ABSENT), text
    assert read(institution(ORG_C)).status == 404


def test_pix_cross_references_only_the_records_the_caller_may_see(
    app: Any, db: Database, who: dict[str, dict[str, str]]
) -> None:
    person = person_id(db)

    def targets(r: httpx.Response) -> tuple[set[str], set[str]]:
        assert r.status_code == 200, r.text
        params = r.json()["parameter"]
        ids = {p["valueReference"]["reference"] for p in params if p["name"] == "targetId"}
        idents = {p["valueIdentifier"]["value"] for p in params if p["name"] == "targetIdentifier"}
        return ids, idents

    everything = targets(pix(app, who["op"], f"{MRN_B}|mrn-{PB}"))
    assert everything == (
        {f"Patient/{PA}", f"Patient/{PB}", f"Person/{person}"},
        {ID_A, f"mrn-{PA}", f"mrn-{PB}"},
    )
    unknown = pix(app, who["b"], f"{MRN_A}|mrn-nobody")
    assert unknown.status_code == 404
    for name in ("b", "res_b"):
        r = pix(app, who[name], f"{MRN_B}|mrn-{PB}")
        assert targets(r) == ({f"Patient/{PB}", f"Person/{person}"}, {f"mrn-{PB}"}), name
        shows_nothing_of_a(r)
        # A's numbers are found only on A's record: answered as a number nobody has.
        for token in (f"{naming.PRC_RESIDENT_ID}|{ID_A}", f"{MRN_A}|mrn-{PA}"):
            r = pix(app, who[name], token)
            assert r.status_code == 404 and r.json()["issue"] == unknown.json()["issue"], (name, token)
    assert targets(pix(app, who["a"], f"{naming.PRC_RESIDENT_ID}|{ID_A}")) == (
        {f"Patient/{PA}", f"Person/{person}"},
        {ID_A, f"mrn-{PA}"},
    )
    assert pix(app, who["c"], f"{MRN_B}|mrn-{PB}").status_code == 404


def test_match_grades_a_record_on_its_own_when_its_persons_best_is_hidden(
    app: Any, db: Database, who: dict[str, dict[str, str]]
) -> None:
    # A's ID number on the query: A's record matches it for certain, B's only on the demographics.
    query = {
        "resourceType": "Patient",
        "name": [{"family": "王", "given": ["芳"]}],
        "gender": "female",
        "birthDate": "1980-05-12",
        "identifier": [{"system": naming.PRC_RESIDENT_ID, "value": ID_A}],
    }
    body = {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": query}]}

    def scores(headers: dict[str, str]) -> dict[str, tuple[str, float]]:
        r = send(app, "POST", "/fhir/Patient/$match", headers, json=body)
        assert r.status_code == 200, r.text
        assert r.json()["total"] == len(r.json().get("entry", []))
        return {
            e["resource"]["id"]: (e["search"]["extension"][0]["valueCode"], e["search"]["score"])
            for e in r.json().get("entry", [])
        }

    everything = scores(who["op"])
    assert set(everything) == {PA, PB} and everything[PA] == everything[PB]  # the person's grade
    with UnitOfWork(db) as uow:
        stored = get_current(uow.conn, "Patient", PB)
        assert stored is not None and stored.content is not None
        own = current_matcher(uow).score(
            prepare(record_from_patient("$match", query)),
            prepare(record_from_patient(PB, orjson.loads(stored.content))),
        )
    b = scores(who["b"])
    assert b == {PB: (own.grade, round(own.probability, 4))}
    assert b[PB][1] < everything[PA][1], "B's record must not carry the score A's record earned"
    assert scores(who["c"]) == {}


def test_the_stewards_desk_and_index_totals_are_the_operators(
    app: Any, db: Database, who: dict[str, dict[str, str]]
) -> None:
    person = person_id(db)
    for name in ("b", "c", "res_b"):
        for path in (f"/api/mpi/persons/{person}", "/api/mpi/persons/no-such-person", "/api/mpi/counts"):
            r = send(app, "GET", path, who[name])
            assert r.status_code == 403, (name, path, r.text)
            shows_nothing_of_a(r)
    assert send(app, "GET", "/api/mpi/counts", who["op"]).json()["records"] >= 2
    view = send(app, "GET", f"/api/mpi/persons/{person}", who["op"]).json()
    assert {r["patient"] for r in view["records"]} == {PA, PB}


def test_what_an_institution_is_shown_is_what_its_audit_record_says(
    app: Any, db: Database, who: dict[str, dict[str, str]]
) -> None:
    person = person_id(db)
    for path in (f"/fhir/Person?_id={person}", f"/fhir/Person?link=Patient/{PB}"):
        assert send(app, "GET", path, who["b"]).status_code == 200
    assert pix(app, who["b"], f"{MRN_B}|mrn-{PB}").status_code == 200
    with db.engine.connect() as conn:
        rows = conn.execute(
            select(audit_event.c.subtype, audit_event.c.patient_keys).where(
                audit_event.c.org_id == ORG_B, audit_event.c.patient_keys.is_not(None)
            )
        ).all()
    assert rows, "B's reads are recorded with the patients they returned"
    assert all(r.patient_keys.split() == [PB] for r in rows if not r.subtype.startswith("card")), rows


# --------------------------------------------------------------------------- the health card


@pytest.fixture(scope="module")
def card_no(app: Any, who: dict[str, dict[str, str]]) -> str:
    r = send(app, "POST", "/api/cards", who["op"], json={"patient": PA})
    assert r.status_code == 201, r.text
    assert r.json()["card_no"] == ID_A
    r = send(app, "POST", f"/api/cards/{ID_A}/activate", who["op"], json={"reason": "ID card seen"})
    assert r.status_code == 200, r.text
    return ID_A


def test_a_front_desk_resolves_any_card_but_learns_only_its_own_records(
    app: Any, db: Database, who: dict[str, dict[str, str]], card_no: str
) -> None:
    card = {"card_no": card_no, "kind": "resident-id", "sequence": 1, "status": "active"}
    desk_c = send(app, "GET", f"/api/cards/{card_no}", who["c"])
    assert desk_c.status_code == 200, desk_c.text
    register = {"system": naming.HEALTH_CARD, "value": card_no}
    assert desk_c.json() == {**card, "records": [], "register": register}
    desk_b = send(app, "GET", f"/api/cards/{card_no}", who["b"])
    assert desk_b.status_code == 200, desk_b.text
    assert desk_b.json() == {**card, "records": [PB], "person": person_id(db)}
    assert PA not in desk_b.text and PA not in desk_c.text
    # Those who may see the record the card was issued on get the card whole.
    desk_a = send(app, "GET", f"/api/cards/{card_no}", who["a"]).json()
    assert (desk_a["patient"], desk_a["district"], desk_a["records"]) == (PA, "110105", [PA])
    assert sorted(send(app, "GET", f"/api/cards/{card_no}", who["op"]).json()["records"]) == [PB, PA]
    own = send(app, "GET", f"/api/cards/{card_no}", who["res_a"])
    assert own.status_code == 200 and own.json()["patient"] == PA
    # Every lookup is recorded with the holder as the patient, also C's, which was shown none.
    with db.engine.connect() as conn:
        rows = conn.execute(
            select(audit_event.c.org_id, audit_event.c.patient_keys, audit_event.c.entity).where(
                audit_event.c.subtype == "card-lookup"
            )
        ).all()
    by_org = {r.org_id: r for r in rows}
    assert PA in by_org[ORG_C].patient_keys.split() and PA in by_org[ORG_B].patient_keys.split()
    assert all(card_no not in (r.entity or "") for r in rows)


def test_a_residents_token_resolves_only_their_own_cards_whatever_the_state(
    app: Any, who: dict[str, dict[str, str]], card_no: str
) -> None:
    unknown = send(app, "GET", f"/api/cards/{UNKNOWN_ID}", who["res_b"])
    assert unknown.status_code == 404 and unknown.json()["reason"] == "unknown-card"

    def same_as_unknown() -> None:
        r = send(app, "GET", f"/api/cards/{card_no}", who["res_b"])
        # The same answer, word for word, but for the number the caller sent.
        assert r.status_code == 404 and {**r.json(), "instance": ""} == {**unknown.json(), "instance": ""}

    same_as_unknown()  # active
    assert (
        send(app, "POST", f"/api/cards/{card_no}/report-lost", who["op"], json={"reason": "lost"}).status_code
        == 200
    )
    same_as_unknown()  # lost: still no hint that the card exists
    lost = send(app, "GET", f"/api/cards/{card_no}", who["res_a"])
    assert lost.status_code == 409 and lost.json()["reason"] == "card-lost"  # the holder is told
    # An institution's desk is told the state: that is what it must refuse the card for.
    assert send(app, "GET", f"/api/cards/{card_no}", who["c"]).json()["reason"] == "card-lost"
    # The FHIR lookups by the number answer the same: somebody else's lost card finds nothing
    # for a resident, as a number never issued does; its holder and a desk are told it is lost.
    for path in (
        f"/fhir/Patient?identifier={naming.HEALTH_CARD}|{card_no}",
        f"/fhir/Observation?subject:Patient.identifier={naming.HEALTH_CARD}|{card_no}",
        f"/fhir/Patient/$ihe-pix?sourceIdentifier={naming.HEALTH_CARD}|{card_no}",
    ):
        never = send(app, "GET", path.replace(card_no, UNKNOWN_ID), who["res_b"])
        other = send(app, "GET", path, who["res_b"])
        assert other.status_code == never.status_code != 409, path
        assert other.json().get("total") == never.json().get("total"), path
        assert "lost" not in other.text, path
        for name in ("res_a", "c"):
            told = send(app, "GET", path, who[name])
            assert told.status_code == 409 and "reported lost" in told.text, (name, path)
    assert (
        send(app, "POST", f"/api/cards/{card_no}/resume", who["op"], json={"reason": "found"}).status_code
        == 200
    )


def test_card_totals_are_the_operators(app: Any, who: dict[str, dict[str, str]], card_no: str) -> None:
    for name in ("a", "b", "c", "res_a"):
        assert send(app, "GET", "/api/cards/counts", who[name]).status_code == 403, name
    assert send(app, "GET", "/api/cards/counts", who["op"]).json()["held"] >= 1


def test_an_institutions_audit_trail_names_only_the_patients_it_may_see(
    app: Any, who: dict[str, dict[str, str]], card_no: str
) -> None:
    """Decision 0016: an institution's own events name only the patients it may see now — not
    one it was refused, nor the holder of a card its desk looked up (recorded on the event for
    the holder's sake) — so its log cannot tell it that a record exists, or whose it is."""
    desk = send(app, "GET", f"/api/cards/{card_no}", who["c"])
    assert desk.status_code == 200 and desk.json()["records"] == []  # the state, not whose it is
    assert send(app, "GET", f"/fhir/Patient/{PA}", who["c"]).status_code == 404
    searched = send(app, "GET", f"/fhir/Observation?subject=Patient/{PA}", who["c"])
    assert searched.status_code == 200 and searched.json().get("total", 0) == 0
    log = send(app, "GET", "/fhir/AuditEvent?_count=200", who["c"])
    assert log.status_code == 200
    events = [e["resource"] for e in log.json().get("entry", [])]
    assert any(
        (ent.get("what") or {}).get("reference") == f"Patient/{PA}"
        for e in events
        for ent in e.get("entity", [])
    ), "C's refused read is in its own log, as the reference it sent"
    named = {
        ent["what"]["reference"]
        for e in events
        for ent in e.get("entity", [])
        if (ent.get("role") or {}).get("code") == "1"
    }
    assert f"Patient/{PA}" not in named
    by_patient = send(app, "GET", f"/fhir/AuditEvent?patient=Patient/{PA}", who["c"])
    assert by_patient.status_code == 200 and by_patient.json().get("total", 0) == 0
