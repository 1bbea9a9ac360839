"""The look-alike matrix over HTTP, on the full platform (every observer, the patient index, the
audit log as /fhir/AuditEvent), both databases: from the institution without a reason, and from
a resident reaching for another patient, every path returns nothing of hospital A's patient —
including Task, Binary, Bundle, deleted resources, history and the audit log. And every path is
refused to a token whose scopes do not cover it.
"""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import httpx
import orjson
import pytest

from tests.support.auth import bearer, system_token
from yilian.api.app import create_app
from yilian.api.wiring import platform_settings
from yilian.db import Database, UnitOfWork
from yilian.kernel.naming import PRC_RESIDENT_ID
from yilian.kernel.prc_id import check_character
from yilian.security.principal import RESIDENT, Principal
from yilian.security.scopes import parse_scopes
from yilian.security.tokens import issue

ID_A, ID_B = (f + check_character(f) for f in ("11010519800512002", "11010519800512004"))
SECRET = "疑似HIV感染"  # in A's referral Task and Binary: must never reach anyone without a reason
BLOB = base64.b64encode(f"王芳 {ID_A} {SECRET}".encode()).decode()
# Everything of pa's record, as the matrix looks for it in what comes back.
PA = {
    "Patient/pa", "Encounter/enc-pa", "Observation/obs-pa", "Provenance/prov-pa", "Observation/obs-pa-gone",
    "Task/task-pa", "Binary/bin-pa", "Bundle/doc-pa", "DocumentReference/docref-pa",
}  # fmt: skip
MARKERS = (
    "mrn-pa",
    ID_A,
    SECRET,
    BLOB[:24],
    "Patient/pa",
    '"pa"',
    "obs-pa",
    "enc-pa",
    "task-pa",
    "bin-pa",
    "doc-pa",
)


def send(app: Any, method: str, path: str, headers: dict[str, str], body: Any = None) -> httpx.Response:
    async def go() -> httpx.Response:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver", timeout=120
        ) as client:
            return await client.request(method, path, headers=headers, json=body)

    return asyncio.run(go())


def patient(pid: str, id_number: str) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": pid,
        "name": [{"family": "王", "given": ["芳"]}],
        "gender": "female",
        "birthDate": "1980-05-12",
        "identifier": [
            {"system": "urn:test:mrn", "value": f"mrn-{pid}"},
            {"system": PRC_RESIDENT_ID, "value": id_number},
        ],
    }


def record_of(pid: str, org: str) -> list[dict[str, Any]]:
    return [
        patient(pid, ID_A if pid == "pa" else ID_B),
        {
            "resourceType": "Encounter",
            "id": f"enc-{pid}",
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": f"Patient/{pid}"},
            "serviceProvider": {"reference": f"Organization/{org}"},
        },
        {
            "resourceType": "Observation",
            "id": f"obs-{pid}",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
            "subject": {"reference": f"Patient/{pid}"},
            "encounter": {"reference": f"Encounter/enc-{pid}"},
            "valueQuantity": {"value": 150},
        },
        {
            "resourceType": "Provenance",
            "id": f"prov-{pid}",
            "target": [{"reference": f"Observation/obs-{pid}"}],
            "recorded": "2026-01-01T00:00:00Z",
            "agent": [{"who": {"reference": f"Organization/{org}"}}],
        },
        {
            "resourceType": "Observation",
            "id": f"obs-{pid}-gone",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
            "subject": {"reference": f"Patient/{pid}"},
        },
        {
            "resourceType": "Task",
            "id": f"task-{pid}",
            "status": "requested",
            "intent": "order",
            "for": {"reference": f"Patient/{pid}"},
            "owner": {"reference": f"Organization/{org}"},
            "description": f"转诊: {SECRET if pid == 'pa' else '复查'}",
        },
        {
            "resourceType": "Binary",
            "id": f"bin-{pid}",
            "contentType": "text/plain",
            "securityContext": {"reference": f"Patient/{pid}"},
            "data": BLOB if pid == "pa" else "AA==",
        },
        {
            "resourceType": "DocumentReference",
            "id": f"docref-{pid}",
            "status": "current",
            "subject": {"reference": f"Patient/{pid}"},
            "content": [{"attachment": {"url": f"Binary/bin-{pid}"}}],
        },
        {
            "resourceType": "Bundle",
            "id": f"doc-{pid}",
            "type": "document",
            "timestamp": "2026-01-01T00:00:00Z",
            "identifier": {"system": "urn:test:doc", "value": f"d-{pid}"},
            "entry": [
                {
                    "fullUrl": f"http://testserver/fhir/Composition/comp-{pid}",
                    "resource": {
                        "resourceType": "Composition",
                        "id": f"comp-{pid}",
                        "status": "final",
                        "type": {"text": "出院小结"},
                        "subject": {"reference": f"Patient/{pid}"},
                        "date": "2026-01-01",
                        "author": [{"reference": f"Organization/{org}"}],
                        "title": "出院小结",
                    },
                },
                {
                    "fullUrl": f"http://testserver/fhir/Patient/{pid}",
                    "resource": patient(pid, ID_A if pid == "pa" else ID_B),
                },
            ],
        },
    ]


@pytest.fixture(scope="module")
def region(db: Database) -> dict[str, Any]:
    """A treats pa, B treats pb (same name, sex, birth date), C has no reason for either; each
    institution writes its own record with its own token. A deletes one of pa's observations."""
    app = create_app(db, platform_settings())
    op = bearer(system_token(db, name="operator"))
    for o in "abc":
        r = send(
            app,
            "PUT",
            f"/fhir/Organization/org-{o}",
            op,
            {"resourceType": "Organization", "id": f"org-{o}", "name": f"institution {o}"},
        )
        assert r.status_code in (200, 201), r.text
    tokens = {o: bearer(system_token(db, org_id=f"org-{o}", name=f"HIS {o}")) for o in "abc"}
    for pid, o in (("pa", "a"), ("pb", "b")):
        for res in record_of(pid, f"org-{o}"):
            r = send(app, "PUT", f"/fhir/{res['resourceType']}/{res['id']}", tokens[o], res)
            assert r.status_code in (200, 201), r.text
        assert send(app, "DELETE", f"/fhir/Observation/obs-{pid}-gone", tokens[o]).status_code == 204
    # The operator's search touches both patients: an audit event naming pa and pb.
    assert send(app, "GET", "/fhir/Patient?name=王芳", op).status_code == 200
    deadline = time.monotonic() + 30
    while (
        not send(app, "GET", "/fhir/AuditEvent?patient=Patient/pa&patient=Patient/pb&subtype=search-type", op)
        .json()
        .get("entry")
    ):
        assert time.monotonic() < deadline, "the operator's search never reached the audit log"
        time.sleep(0.2)
    with UnitOfWork(db, write=True) as uow:
        resident = Principal(
            kind=RESIDENT,
            subject="res-pb",
            scopes=parse_scopes("patient/*.rs"),
            org_id=None,
            patient_keys=frozenset({"pb"}),
        )
        res_pb = bearer(issue(uow, resident, lifetime_s=3600).access_token)
        uow.commit()
    return {"app": app, "op": op, **tokens, "resident": res_pb}


PATHS = [
    "Patient/pa", "Patient/pa/_history/1", "Patient/pa/_history", "Observation/obs-pa", "Patient?name=王芳",
    "Patient?family=王&birthdate=1980-05-12", "Patient?identifier=urn:test:mrn|mrn-pa", f"Patient?identifier={PRC_RESIDENT_ID}|{ID_A}",
    "Patient?_id=pa", "Observation?code=http://loinc.org|8480-6", "Observation?subject:Patient.name=王芳",
    "Observation?patient.identifier=urn:test:mrn|mrn-pa", "Patient?_has:Observation:patient:code=8480-6",
    "Encounter?service-provider=Organization/org-a", "Observation?_include=Observation:patient&_id=obs-pa,obs-pb",
    "Patient?_revinclude=Observation:patient&_revinclude=Provenance:target&_id=pa,pb",
    "Observation?_revinclude:iterate=Provenance:target&code=8480-6", "Patient/pa/Observation", "Patient/pa/$everything",
    "Observation/_history", "_history", "?_type=Patient,Observation,Task,Binary,Bundle&_lastUpdated=gt2000-01-01",
    # outside the compartment
    "Task?patient=Patient/pa", "Task", "Task/task-pa", "Task?owner=Organization/org-a", "Binary", "Binary/bin-pa",
    "Bundle", "Bundle/doc-pa", "Bundle?identifier=urn:test:doc|d-pa", "DocumentReference?subject=Patient/pa",
    # deleted, and its history
    "Observation/obs-pa-gone", "Observation/obs-pa-gone/_history", "Observation/obs-pa-gone/_history/2",
    "Observation/obs-pa-gone/_history/1", "Task/_history", "Binary/_history", "Bundle/_history",
    # the audit log
    "AuditEvent", "AuditEvent?patient=Patient/pa", "AuditEvent?patient=Patient/pb", "AuditEvent?subtype=search-type",
]  # fmt: skip


def leaked(resp: httpx.Response, own_org: str | None = None) -> set[str]:
    """What of pa's record came back: resources (never the request echoed in a link or an error,
    nor in the audit events of the caller's own requests — but their patients count)."""
    if resp.status_code != 200:
        assert resp.status_code in (403, 404), resp.text
        return set()
    body = resp.json()
    out: set[str] = set()

    def look(res: dict[str, Any]) -> None:
        if res.get("resourceType") == "OperationOutcome":
            return
        if res.get("resourceType") == "AuditEvent":
            whom = {
                str(e.get("what", {}).get("reference"))
                for e in res.get("entity", [])
                if e.get("role", {}).get("code") == "1"
            }
            out.update(whom & PA)
            if any(
                a.get("who", {}).get("reference") == f"Organization/{own_org}" for a in res.get("agent", [])
            ):
                return
        text = orjson.dumps(res).decode()
        out.update(
            f"{res['resourceType']}/{res.get('id')}"
            for _ in [0]
            if f"{res['resourceType']}/{res.get('id')}" in PA
        )
        out.update(m for m in MARKERS if m in text)

    if body.get("resourceType") == "Bundle" and body.get("type") in ("searchset", "history"):
        for e in body.get("entry", []):
            if "resource" in e:
                look(e["resource"])
            url = e.get("request", {}).get("url", "")
            if url in PA:
                out.add(url)  # a deletion in history
    else:
        look(body)
    return out


@pytest.mark.parametrize("path", PATHS)
def test_no_reason_no_data(region: dict[str, Any], path: str) -> None:
    for who, own in (("c", "org-c"), ("resident", None)):
        got = send(region["app"], "GET", f"/fhir/{path}", region[who])
        assert not leaked(got, own), f"{who}: {path} leaked {leaked(got, own)}"


@pytest.mark.parametrize("path", [p for p in PATHS if not p.startswith(("AuditEvent", "Patient?_has"))])
def test_the_institution_with_the_reason_does_see_it(region: dict[str, Any], path: str) -> None:
    got = send(region["app"], "GET", f"/fhir/{path}", region["a"])
    assert got.status_code in (200, 410), got.text
    if got.status_code == 200 and "org-b" not in path and "obs-pa-gone" not in path:
        assert leaked(got), path


def test_writes_from_the_institution_without_reason_are_refused_as_about_nobody(
    region: dict[str, Any],
) -> None:
    app, c = region["app"], region["c"]
    obs = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "x"},
        "subject": {"reference": "Patient/pa"},
    }
    mine = send(app, "POST", "/fhir/Observation", c, obs)
    ghost = send(app, "POST", "/fhir/Observation", c, {**obs, "subject": {"reference": "Patient/nobody"}})
    assert mine.status_code == ghost.status_code == 422
    assert mine.text.replace("Patient/pa", "X") == ghost.text.replace("Patient/nobody", "X")
    task = {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "for": {"reference": "Patient/pa"},
        "owner": {"reference": "Organization/org-c"},
    }
    assert send(app, "POST", "/fhir/Task", c, task).status_code == 422
    related = {
        "resourceType": "RelatedPerson",
        "patient": {"reference": "Patient/pa"},
        "identifier": [{"system": PRC_RESIDENT_ID, "value": ID_B}],
    }
    assert send(app, "POST", "/fhir/RelatedPerson", c, related).status_code == 422
    assert (
        send(
            app,
            "PUT",
            "/fhir/Encounter/enc-pa",
            c,
            {"resourceType": "Encounter", "id": "enc-pa", "status": "finished", "class": {"code": "AMB"}},
        ).status_code
        == 404
    )
    assert send(app, "GET", "/fhir/Patient/pa", c).status_code == 404


# Each path as a token of A sees it with a scope for one unrelated type only (Organization).
@pytest.mark.parametrize("path", [p for p in PATHS if not p.startswith("?") and not p.startswith("_history")])
def test_every_path_is_refused_outside_the_tokens_scopes(
    db: Database, region: dict[str, Any], path: str
) -> None:
    narrow = region.setdefault(
        "narrow",
        bearer(system_token(db, scopes="system/Organization.rs", org_id="org-a", name="directory only")),
    )
    got = send(region["app"], "GET", f"/fhir/{path}", narrow)
    assert got.status_code == 403, got.text


@pytest.mark.parametrize(
    "path", ["_history", "?_type=Patient,Observation,Task,Binary,Bundle&_lastUpdated=gt2000-01-01"]
)
def test_system_wide_paths_keep_to_the_tokens_types(db: Database, region: dict[str, Any], path: str) -> None:
    narrow = region.setdefault(
        "narrow",
        bearer(system_token(db, scopes="system/Organization.rs", org_id="org-a", name="directory only")),
    )
    got = send(region["app"], "GET", f"/fhir/{path}", narrow)
    if got.status_code == 200:
        types = {
            e.get("resource", {}).get("resourceType") or e["request"]["url"].split("/")[0]
            for e in got.json().get("entry", [])
        }
        assert types <= {"Organization"}, types
    else:
        assert got.status_code == 403
