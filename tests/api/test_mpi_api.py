"""The patient index over HTTP: the steward's desk (/api/mpi) and the FHIR views, on a real
server, with authentication, scope and institution checks, problem documents and audit."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.auth import bearer, system_token
from tests.support.server import RunningServer
from yilian.db import Database
from yilian.kernel import naming

MRN_A = naming.mrn_system("api-hosp-a")
MRN_B = naming.mrn_system("api-hosp-b")


def _patient(
    family: str, given: str, birth: str, gender: str, mrn: tuple[str, str], **extra: Any
) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "name": [{"use": "official", "family": family, "given": [given]}],
        "birthDate": birth,
        "gender": gender,
        "identifier": [{"system": mrn[0], "value": mrn[1]}, *extra.pop("identifiers", [])],
        **extra,
    }


@pytest.fixture(scope="module")
def seeded(server: RunningServer, auth: dict[str, str]) -> dict[str, str]:
    base = f"{server.base}/fhir"
    for org in ("api-hosp-a", "api-hosp-b", "api-hosp-z"):
        body = {"resourceType": "Organization", "id": org, "name": org}
        httpx.put(f"{base}/Organization/{org}", json=body, headers=auth, timeout=30).raise_for_status()
    out = {}
    for key, body in {
        "a": _patient(
            "欧阳",
            "娜",
            "1988-08-08",
            "female",
            (MRN_A, "OA-1"),
            telecom=[{"system": "phone", "value": "13511112222"}],
        ),
        # The same resident elsewhere, day and month swapped and without the phone: a steward's call.
        "b": _patient("欧阳", "娜", "1988-08-08", "female", (MRN_B, "OB-1")),
        "c": _patient("司马", "光", "1950-01-01", "male", (MRN_B, "OB-2")),
    }.items():
        r = httpx.post(f"{base}/Patient", json=body, headers=auth, timeout=30)
        assert r.status_code == 201, r.text
        out[key] = r.json()["id"]
    return out


def test_steward_desk_needs_a_token_and_the_operator(
    server: RunningServer, db: Database, seeded: dict[str, str]
) -> None:
    r = httpx.get(f"{server.base}/api/mpi/reviews", timeout=30)
    assert r.status_code == 401 and r.headers["content-type"].startswith("application/problem+json")
    hospital = bearer(system_token(db, scopes="system/*.cruds", org_id="api-hosp-a", name="HIS A"))
    # Every route, also a person's records and the index's totals: 403 whatever the id.
    for path in ("reviews", "counts", "persons/no-such-person", f"persons/{seeded['a']}"):
        r = httpx.get(f"{server.base}/api/mpi/{path}", headers=hospital, timeout=30)
        assert r.status_code == 403 and "operator" in r.json()["detail"], path
    no_scope = bearer(system_token(db, scopes="system/Observation.rs", name="lab"))
    r = httpx.get(f"{server.base}/api/mpi/reviews", headers=no_scope, timeout=30)
    assert r.status_code == 403 and "Person" in r.json()["detail"]


def test_merge_and_unmerge_over_http_with_reasons_and_audit(
    server: RunningServer, auth: dict[str, str], seeded: dict[str, str]
) -> None:
    fhir = f"{server.base}/fhir"
    people = {}
    for key in ("a", "c"):
        found = httpx.get(f"{fhir}/Person?link=Patient/{seeded[key]}", headers=auth, timeout=30).json()
        people[key] = found["entry"][0]["resource"]["id"]
    assert people["a"] != people["c"]
    url = f"{server.base}/api/mpi/persons/{people['c']}/merge"
    bad = httpx.post(url, json={"into": people["a"]}, headers=auth, timeout=30)
    assert bad.status_code == 400 and bad.json()["errors"][0]["pointer"] == ["reason"]
    not_json = httpx.post(url, content=b"{", headers={**auth, "content-type": "application/json"}, timeout=30)
    assert not_json.status_code == 400 and "JSON" in not_json.json()["detail"]
    merged = httpx.post(url, json={"into": people["a"], "reason": "test merge"}, headers=auth, timeout=30)
    assert merged.status_code == 200, merged.text
    event = merged.json()["event"]
    person = httpx.get(f"{server.base}/api/mpi/persons/{people['a']}", headers=auth, timeout=30).json()
    assert {r["patient"] for r in person["records"]} >= {seeded["a"], seeded["c"]}
    assert (
        httpx.post(url, json={"into": people["a"], "reason": "again"}, headers=auth, timeout=30).status_code
        == 409
    )
    undo = httpx.post(
        f"{server.base}/api/mpi/persons/{people['c']}/unmerge",
        json={"merge_event": event, "reason": "wrong"},
        headers=auth,
        timeout=30,
    )
    assert undo.status_code == 200, undo.text
    assert undo.json()["records"] == [seeded["c"]]
    audit = httpx.get(f"{fhir}/AuditEvent?subtype=mpi-merge&_count=10", headers=auth, timeout=30).json()
    assert audit.get("entry"), "the merge must be in the audit log"


def test_match_and_pix_over_http_respect_the_institution(
    server: RunningServer, db: Database, auth: dict[str, str], seeded: dict[str, str]
) -> None:
    fhir = f"{server.base}/fhir"
    query = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "resource", "resource": _patient("Ouyang", "Na", "1988-08-08", "female", (MRN_A, "x"))}
        ],
    }
    r = httpx.post(f"{fhir}/Patient/$match", json=query, headers=auth, timeout=30)
    assert r.status_code == 200, r.text
    assert seeded["a"] in {e["resource"]["id"] for e in r.json()["entry"]}
    # An institution with no reason to see these residents gets nothing back, and no hint.
    stranger = bearer(system_token(db, scopes="system/*.rs", org_id="api-hosp-z", name="HIS Z"))
    r = httpx.post(f"{fhir}/Patient/$match", json=query, headers=stranger, timeout=30)
    assert r.status_code == 200 and r.json()["total"] == 0
    pix = httpx.get(
        f"{fhir}/Patient/$ihe-pix", params={"sourceIdentifier": f"{MRN_A}|OA-1"}, headers=stranger, timeout=30
    )
    assert pix.status_code == 404
    pix = httpx.get(
        f"{fhir}/Patient/$ihe-pix", params={"sourceIdentifier": f"{MRN_A}|OA-1"}, headers=auth, timeout=30
    )
    assert pix.status_code == 200
    cap = httpx.get(f"{fhir}/metadata", timeout=30).json()
    patient = next(r for r in cap["rest"][0]["resource"] if r["type"] == "Patient")
    assert {"match", "ihe-pix"} <= {o["name"] for o in patient["operation"]}
    person = next(r for r in cap["rest"][0]["resource"] if r["type"] == "Person")
    assert [i["code"] for i in person["interaction"]] == ["read", "search-type"]


def test_link_unlink_and_review_decisions_over_http_record_who_and_why(
    server: RunningServer, auth: dict[str, str], seeded: dict[str, str]
) -> None:
    fhir, api = f"{server.base}/fhir", f"{server.base}/api/mpi"

    def person_of(patient: str) -> str:
        found = httpx.get(f"{fhir}/Person?link=Patient/{patient}", headers=auth, timeout=30).json()
        return str(found["entry"][0]["resource"]["id"])

    created = []
    for body in (
        _patient("诸葛", "明", "1961-03-03", "male", (MRN_A, "OA-77")),
        _patient("上官", "婉", "1979-07-07", "female", (MRN_B, "OB-77")),
    ):
        r = httpx.post(f"{fhir}/Patient", json=body, headers=auth, timeout=30)
        assert r.status_code == 201, r.text
        created.append(r.json()["id"])
    first, second = created
    target = person_of(first)
    assert person_of(second) != target
    no_reason = httpx.post(
        f"{api}/links", json={"patient": second, "person": target}, headers=auth, timeout=30
    )
    assert no_reason.status_code == 400 and no_reason.json()["errors"][0]["pointer"] == ["reason"]
    linked = httpx.post(
        f"{api}/links",
        json={"patient": second, "person": target, "reason": "steward: same person, ID card seen"},
        headers=auth,
        timeout=30,
    )
    assert linked.status_code == 200, linked.text
    assert linked.json()["person"] == target and person_of(second) == target
    unlinked = httpx.post(
        f"{api}/unlinks",
        json={"patient": second, "reason": "steward: linked in error"},
        headers=auth,
        timeout=30,
    )
    assert unlinked.status_code == 200, unlinked.text
    assert unlinked.json()["person"] != target and person_of(second) != target
    view = httpx.get(f"{api}/persons/{target}", headers=auth, timeout=30).json()
    assert [r["patient"] for r in view["records"]] == [first]
    decisions = [(h["action"], h["reason"]) for h in view["history"] if h["patient"] == second]
    assert len(decisions) == 2, view["history"]
    assert decisions[0][1] == "steward: same person, ID card seen"
    assert decisions[1][1] == "steward: linked in error"
    actors = {h["actor"] for h in view["history"] if h["patient"] == second}
    assert actors and all(a for a in actors)  # who: the operator's client, never blank
    # Review decisions over HTTP. Same name and sex, birth date day and month swapped, no phone
    # on the second: worth a steward's look, not certain.
    pair = []
    for body in (
        _patient(
            "陈",
            "静",
            "1985-03-04",
            "female",
            (MRN_A, "OA-78"),
            telecom=[{"system": "phone", "value": "13700002222"}],
        ),
        _patient("陈", "静", "1985-04-03", "female", (MRN_B, "OB-78")),
    ):
        r = httpx.post(f"{fhir}/Patient", json=body, headers=auth, timeout=30)
        assert r.status_code == 201, r.text
        pair.append(r.json()["id"])
    reviews = httpx.get(f"{api}/reviews", params={"status": "open"}, headers=auth, timeout=30)
    assert reviews.status_code == 200, reviews.text
    mine = [x for x in reviews.json()["reviews"] if x["patient_id"] == pair[1]]
    assert len(mine) == 1, reviews.json()
    review = mine[0]["review_id"]
    assert mine[0]["grade"] == "probable" and mine[0]["candidate_patient_id"] == pair[0]
    r = httpx.post(
        f"{api}/reviews/{review}/reject", json={"reason": "different people"}, headers=auth, timeout=30
    )
    assert r.status_code == 200, r.text
    again = httpx.post(f"{api}/reviews/{review}/reject", json={"reason": "again"}, headers=auth, timeout=30)
    assert again.status_code == 409, again.text
    closed = httpx.get(f"{api}/reviews", params={"status": "rejected"}, headers=auth, timeout=30).json()
    decided = {x["review_id"]: x for x in closed["reviews"]}
    assert decided[review]["reason"] == "different people" and decided[review]["decided_by"]
    assert person_of(pair[0]) != person_of(pair[1])
    missing = httpx.post(
        f"{api}/reviews/no-such-review/accept", json={"reason": "x" * 5}, headers=auth, timeout=30
    )
    assert missing.status_code == 404 and missing.headers["content-type"].startswith(
        "application/problem+json"
    )


def test_a_person_is_read_by_id_over_http(
    server: RunningServer, auth: dict[str, str], seeded: dict[str, str]
) -> None:
    """The short read path answers stored resources only; a Person is the patient index's view."""
    fhir = f"{server.base}/fhir"
    found = httpx.get(f"{fhir}/Person?link=Patient/{seeded['c']}", headers=auth, timeout=30).json()
    person = found["entry"][0]["resource"]
    r = httpx.get(f"{fhir}/Person/{person['id']}", headers=auth, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["id"] == person["id"] and r.json()["link"] == person["link"]
    assert httpx.get(f"{fhir}/Person/no-such-person", headers=auth, timeout=30).status_code == 404
