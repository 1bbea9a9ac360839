"""``/api/cards`` through the ASGI app on both databases: authentication, scopes, the access
decision by institution, the front-desk lookup and its refusals, the batch report, counts."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import re
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from tests.integration.card.conftest import MRN_A, MRN_B, resident_id
from tests.support.auth import bearer, system_token
from yilian.api.app import create_app
from yilian.api.wiring import platform_settings
from yilian.db import Database
from yilian.kernel import naming
from yilian.security.audit.tables import audit_event

HOSP_A, HOSP_B, HOSP_Z = "card-api-a", "card-api-b", "card-api-z"


@pytest.fixture(scope="module")
def app(db: Database) -> Any:
    return create_app(db, platform_settings())


def send(
    app: Any, method: str, path: str, *, headers: dict[str, str] | None = None, **kwargs: Any
) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver", timeout=120
        ) as client:
            return await client.request(method, path, headers=headers or {}, **kwargs)

    return asyncio.run(go())


@pytest.fixture(scope="module")
def operator(db: Database) -> dict[str, str]:
    return bearer(system_token(db, scopes="system/*.cruds", name="card operator"))


@pytest.fixture(scope="module")
def hospitals(db: Database, app: Any, operator: dict[str, str]) -> dict[str, dict[str, str]]:
    for org in (HOSP_A, HOSP_B, HOSP_Z):
        r = send(
            app,
            "PUT",
            f"/fhir/Organization/{org}",
            headers=operator,
            json={"resourceType": "Organization", "id": org, "name": org},
        )
        assert r.status_code in (200, 201), r.text
    return {
        org: bearer(system_token(db, scopes="system/Patient.cruds", org_id=org, name=f"HIS {org}"))
        for org in (HOSP_A, HOSP_B, HOSP_Z)
    }


def register(
    app: Any,
    headers: dict[str, str],
    *,
    prc: str | None,
    mrn: tuple[str, str],
    born: str = "1980-05-17",
    gender: str = "female",
) -> str:
    identifiers = [{"system": mrn[0], "value": mrn[1]}]
    if prc:
        identifiers.append({"system": naming.PRC_RESIDENT_ID, "value": prc})
    body = {
        "resourceType": "Patient",
        "name": [{"family": "周", "given": ["敏"]}],
        "birthDate": born,
        "gender": gender,
        "identifier": identifiers,
    }
    r = send(app, "POST", "/fhir/Patient", headers=headers, json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def is_problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = r.json()
    return body


def test_every_card_endpoint_needs_a_token_and_the_right_scope(
    app: Any, db: Database, hospitals: dict[str, dict[str, str]]
) -> None:
    rid = resident_id(seq=302)
    for method, path in [
        ("GET", f"/api/cards/{rid}"),
        ("GET", "/api/cards/counts"),
        ("POST", "/api/cards"),
        ("POST", f"/api/cards/{rid}/report-lost"),
    ]:
        is_problem(send(app, method, path, json={}), 401)
    lab = bearer(system_token(db, scopes="system/Observation.rs", org_id=HOSP_A, name="LIS"))
    assert "Patient" in is_problem(send(app, "GET", f"/api/cards/{rid}", headers=lab), 403)["detail"]
    reader = bearer(system_token(db, scopes="system/Patient.rs", org_id=HOSP_A, name="reader"))
    assert (
        "'c' on Patient"
        in is_problem(send(app, "POST", "/api/cards", headers=reader, json={"patient": "x"}), 403)["detail"]
    )
    # Region-wide batch issue is the platform operator's.
    r = send(
        app,
        "POST",
        "/api/cards/batch",
        headers={**hospitals[HOSP_A], "content-type": "text/csv"},
        content=b"name\n",
    )
    assert "operator" in is_problem(r, 403)["detail"]


def test_issue_lookup_refusals_and_replacement_over_http(
    app: Any, db: Database, operator: dict[str, str], hospitals: dict[str, dict[str, str]]
) -> None:
    a, b, z = hospitals[HOSP_A], hospitals[HOSP_B], hospitals[HOSP_Z]
    rid = resident_id(division="330502", born=dt.date(1966, 6, 6), sex="male", seq=311)
    at_a = register(app, a, prc=rid, mrn=(MRN_A, "API-1"), born="1966-06-06", gender="male")
    at_b = register(app, b, prc=rid, mrn=(MRN_B, "API-2"), born="1966-06-06", gender="male")
    # An institution that has never seen the resident cannot issue them a card.
    is_problem(send(app, "POST", "/api/cards", headers=z, json={"patient": at_a}), 404)
    bad = is_problem(
        send(app, "POST", "/api/cards", headers=a, json={"patient": at_a, "residence": "suburb"}), 400
    )
    assert bad["errors"][0]["pointer"] == ["residence"]
    issued = send(
        app,
        "POST",
        "/api/cards",
        headers=a,
        json={"patient": at_a, "residence": "urban", "reason": "walk-in"},
    )
    assert issued.status_code == 201, issued.text
    assert issued.json()["card_no"] == rid and issued.json()["status"] == "issued"
    # Hospital B's record is the same person: no second card.
    again = is_problem(send(app, "POST", "/api/cards", headers=b, json={"patient": at_b}), 409)
    assert "already holds a health card" in again["detail"]

    assert "not been activated" in is_problem(send(app, "GET", f"/api/cards/{rid}", headers=b), 409)["detail"]
    r = send(app, "POST", f"/api/cards/{rid}/activate", headers=a, json={"reason": "ID checked"})
    assert r.status_code == 200 and r.json()["status"] == "active"
    front_desk_b = send(app, "GET", f"/api/cards/{rid}", headers=b)
    assert front_desk_b.status_code == 200, front_desk_b.text
    found = front_desk_b.json()
    assert found["person"] and found["status"] == "active"
    assert found["records"] == [at_b]  # B may know of its own record only
    assert "patient" not in found and "district" not in found and at_a not in front_desk_b.text
    whole = send(app, "GET", f"/api/cards/{rid}", headers=operator).json()
    assert set(whole["records"]) == {at_a, at_b} and whole["patient"] == at_a
    search = send(app, "GET", f"/fhir/Patient?identifier={naming.HEALTH_CARD}|{rid}", headers=a)
    assert {e["resource"]["id"] for e in search.json().get("entry", [])} == {at_a}

    # Institution B cannot change a card whose holder's record it cannot see.
    is_problem(
        send(app, "POST", f"/api/cards/{rid}/report-lost", headers=b, json={"reason": "phone call"}), 404
    )
    assert (
        send(app, "POST", f"/api/cards/{rid}/report-lost", headers=a, json={"reason": "lost"}).status_code
        == 200
    )
    lost = is_problem(send(app, "GET", f"/api/cards/{rid}", headers=b), 409)
    assert "reported lost on" in lost["detail"] and rid not in lost["detail"]
    illegal = is_problem(
        send(app, "POST", f"/api/cards/{rid}/activate", headers=a, json={"reason": "x1"}), 409
    )
    assert "cannot activate a card that is reported lost" in illegal["detail"]
    is_problem(send(app, "POST", f"/api/cards/{rid}/replace", headers=a, json={}), 400)
    replaced = send(app, "POST", f"/api/cards/{rid}/replace", headers=a, json={"reason": "lost for good"})
    assert replaced.status_code == 201, replaced.text
    new_no = replaced.json()["card_no"]
    assert new_no == f"{rid}-02" and replaced.json()["replaces"] == rid
    gone = is_problem(send(app, "GET", f"/api/cards/{rid}", headers=b), 410)
    assert "use the replacement card" in gone["detail"]
    history = send(app, "GET", f"/api/cards/{rid}/history", headers=a).json()
    assert [e["action"] for e in history["history"]] == ["issue", "activate", "report-lost", "replace"]
    assert history["history"][2]["reason"] == "lost" and history["replaced_by"] == new_no
    is_problem(send(app, "GET", "/api/cards/12345", headers=a), 400)

    # The audit log names cards by their internal id and never holds the number readable.
    with db.engine.connect() as conn:
        rows = conn.execute(
            select(audit_event.c.entity, audit_event.c.content).where(audit_event.c.subtype.like("card-%"))
        ).all()
    assert rows and all(rid not in (r.entity or "") for r in rows)
    paths = [
        base64.b64decode(q).decode()
        for r in rows
        for q in re.findall(rb'"query":"([A-Za-z0-9+/=]+)"', bytes(r.content))
    ]
    assert any(p.endswith("/replace") for p in paths), paths
    assert all(rid not in p for p in paths), "request paths are recorded with the ID number masked"


def test_batch_over_http_reports_refused_rows_and_is_idempotent(app: Any, operator: dict[str, str]) -> None:
    one = resident_id(division="330502", born=dt.date(2001, 1, 2), sex="male", seq=323)
    bad = one[:17] + ("0" if one[17] != "0" else "1")
    csv_text = (
        "name,sex,birth_date,id_number,phone,address,district,residence\n"
        f"钱一,男,2001-01-02,{one},,,330502,urban\n"
        f"钱二,男,2001-01-02,{bad},,,330502,urban\n"
        "钱三,女,2026-10-10,,13700137000,,330503,农村\n"
        "钱四,女,2026-10-10,,,,,rural\n"
    )
    headers = {**operator, "content-type": "text/csv"}
    first = send(app, "POST", "/api/cards/batch", headers=headers, content=csv_text.encode())
    assert first.status_code == 200, first.text
    report = first.json()
    assert (report["rows"], report["issued"], report["already_issued"]) == (4, 2, 0)
    reasons = {r["line"]: r["reason"] for r in report["refused"]}
    assert set(reasons) == {3, 5}
    assert "bad check character" in reasons[3] and reasons[5] == "missing required field: district"
    second = send(app, "POST", "/api/cards/batch", headers=headers, content=csv_text.encode()).json()
    assert (second["issued"], second["already_issued"], len(second["refused"])) == (0, 2, 2)
    wrong = send(
        app,
        "POST",
        "/api/cards/batch",
        headers={**operator, "content-type": "application/json"},
        content=b"{}",
    )
    assert "text/csv" in is_problem(wrong, 400)["detail"]


def test_counts_over_http(app: Any, operator: dict[str, str], hospitals: dict[str, dict[str, str]]) -> None:
    # Region-wide totals are the health commission's.
    assert (
        "operator"
        in is_problem(send(app, "GET", "/api/cards/counts", headers=hospitals[HOSP_Z]), 403)["detail"]
    )
    r = send(app, "GET", "/api/cards/counts", headers=operator)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["issued"] == sum(t["issued"] for t in body["by_district"].values())
    assert body["issued"] == sum(t["issued"] for t in body["by_residence"].values())
    past = send(
        app, "GET", "/api/cards/counts", params={"as_of": "2000-01-01T00:00:00+08:00"}, headers=operator
    ).json()
    assert past["issued"] == 0
    is_problem(send(app, "GET", "/api/cards/counts", params={"as_of": "yesterday"}, headers=operator), 400)


def test_fhir_lookups_by_a_withdrawn_card_answer_as_the_front_desk_does(
    app: Any, db: Database, operator: dict[str, str], hospitals: dict[str, dict[str, str]]
) -> None:
    a, b = hospitals[HOSP_A], hospitals[HOSP_B]
    rid = resident_id(division="330502", born=dt.date(1958, 8, 8), sex="female", seq=336)
    at_a = register(app, a, prc=rid, mrn=(MRN_A, "API-7"), born="1958-08-08", gender="female")
    assert send(app, "POST", "/api/cards", headers=a, json={"patient": at_a}).status_code == 201
    assert (
        send(app, "POST", f"/api/cards/{rid}/activate", headers=a, json={"reason": "ok"}).status_code == 200
    )
    assert (
        send(app, "POST", f"/api/cards/{rid}/report-lost", headers=a, json={"reason": "lost"}).status_code
        == 200
    )

    desk = is_problem(send(app, "GET", f"/api/cards/{rid}", headers=b), 409)
    assert desk["reason"] == "card-lost"
    for path, who in (
        (f"/fhir/Patient?identifier={naming.HEALTH_CARD}|{rid}", b),
        (f"/fhir/Patient/$ihe-pix?sourceIdentifier={naming.HEALTH_CARD}|{rid}", b),
        (f"/fhir/Person?identifier={naming.HEALTH_CARD}|{rid}", operator),
    ):
        r = send(app, "GET", path, headers=who)
        assert r.status_code == 409, (path, r.text)
        assert r.headers["content-type"].startswith("application/fhir+json")
        issue = r.json()["issue"][0]
        assert issue["diagnostics"] == desk["detail"]
        assert issue["details"]["coding"][0] == {"system": naming.CARD_REFUSAL, "code": "card-lost"}

    assert (
        send(app, "POST", f"/api/cards/{rid}/replace", headers=a, json={"reason": "new"}).status_code == 201
    )
    gone = send(app, "GET", f"/fhir/Patient?identifier={naming.HEALTH_CARD}|{rid}", headers=b)
    assert (
        gone.status_code == 410 and gone.json()["issue"][0]["details"]["coding"][0]["code"] == "card-replaced"
    )


def test_searches_by_passport_and_permit_reach_the_audit_log_masked(
    app: Any, db: Database, hospitals: dict[str, dict[str, str]]
) -> None:
    a = hospitals[HOSP_A]
    passport, permit = "E87654329", "M1234567890"
    body = {
        "resourceType": "Patient",
        "name": [{"family": "何", "given": ["嘉"]}],
        "identifier": [
            {"system": MRN_A, "value": "API-8"},
            {"system": naming.PASSPORT_CHN, "value": passport},
            {"system": naming.HK_MACAO_PERMIT, "value": permit},
        ],
    }
    assert send(app, "POST", "/fhir/Patient", headers=a, json=body).status_code == 201
    for system, value in ((naming.PASSPORT_CHN, passport), (naming.HK_MACAO_PERMIT, permit)):
        r = send(app, "GET", "/fhir/Patient", params={"identifier": f"{system}|{value}"}, headers=a)
        assert r.status_code == 200 and r.json()["total"] == 1, r.text
    with db.engine.connect() as conn:
        rows = conn.execute(
            select(audit_event.c.entity, audit_event.c.content).where(audit_event.c.subtype == "search-type")
        ).all()
    queries = [
        base64.b64decode(q).decode()
        for r in rows
        for q in re.findall(rb'"query":"([A-Za-z0-9+/=]+)"', bytes(r.content))
    ]
    assert any("passport" in q for q in queries) and any("hk-macao" in q for q in queries), queries
    for text in [*queries, *(r.entity or "" for r in rows), *(bytes(r.content).decode() for r in rows)]:
        assert passport not in text and permit not in text
