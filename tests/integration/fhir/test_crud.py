"""Create, read, vread, update, delete, conditional interactions and versions — on both databases."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.support.fhir_calls import call, ids
from yilian.db import UnitOfWork
from yilian.fhir import FhirContext


def patient(family: str = "王", given: str = "小明", **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "name": [{"family": family, "given": [given]}],
        "gender": "male",
        **extra,
    }


def test_create_assigns_id_version_and_location(uow: UnitOfWork, ctx: FhirContext) -> None:
    r = call(uow, ctx, "POST", "Patient", patient())
    assert r.status == 201
    body = r.json
    assert body["id"] and body["meta"]["versionId"] == "1"
    assert r.headers["ETag"] == 'W/"1"'
    assert r.headers["Location"].endswith(f"/Patient/{body['id']}/_history/1")
    read = call(uow, ctx, "GET", f"Patient/{body['id']}")
    assert read.status == 200 and read.json == body


def test_read_unknown_is_404_and_unknown_type_is_404(uow: UnitOfWork, ctx: FhirContext) -> None:
    assert call(uow, ctx, "GET", "Patient/does-not-exist").status == 404
    r = call(uow, ctx, "GET", "Patientx/1")
    assert r.status == 404 and r.json["resourceType"] == "OperationOutcome"


def test_update_creates_versions_and_vread_returns_each(uow: UnitOfWork, ctx: FhirContext) -> None:
    created = call(uow, ctx, "PUT", "Patient/p-ver", patient(id="p-ver"))
    assert created.status == 201
    updated = call(uow, ctx, "PUT", "Patient/p-ver", patient(given="大明", id="p-ver"))
    assert updated.status == 200 and updated.json["meta"]["versionId"] == "2"
    v1 = call(uow, ctx, "GET", "Patient/p-ver/_history/1")
    v2 = call(uow, ctx, "GET", "Patient/p-ver/_history/2")
    assert v1.json["name"][0]["given"] == ["小明"] and v2.json["name"][0]["given"] == ["大明"]
    assert call(uow, ctx, "GET", "Patient/p-ver/_history/3").status == 404


def test_update_requires_matching_id(uow: UnitOfWork, ctx: FhirContext) -> None:
    r = call(uow, ctx, "PUT", "Patient/a1", patient(id="b2"))
    assert r.status == 400
    r = call(uow, ctx, "PUT", "Patient/a1", patient())
    assert r.status == 400
    assert call(uow, ctx, "GET", "Patient/a1").status == 404


def test_if_match_stale_version_is_412_and_changes_nothing(uow: UnitOfWork, ctx: FhirContext) -> None:
    call(uow, ctx, "PUT", "Patient/im", patient(id="im"))
    call(uow, ctx, "PUT", "Patient/im", patient(id="im", gender="female"))
    stale = call(
        uow, ctx, "PUT", "Patient/im", patient(id="im", gender="other"), headers={"If-Match": 'W/"1"'}
    )
    assert stale.status == 412
    ok = call(uow, ctx, "PUT", "Patient/im", patient(id="im", gender="other"), headers={"If-Match": 'W/"2"'})
    assert ok.status == 200 and ok.json["meta"]["versionId"] == "3"


def test_delete_is_a_versioned_tombstone(uow: UnitOfWork, ctx: FhirContext) -> None:
    call(uow, ctx, "PUT", "Patient/del", patient(id="del"))
    assert call(uow, ctx, "DELETE", "Patient/del").status == 204
    assert call(uow, ctx, "GET", "Patient/del").status == 410
    hist = call(uow, ctx, "GET", "Patient/del/_history")
    assert hist.json["total"] == 2
    methods = [e["request"]["method"] for e in hist.json["entry"]]
    assert methods == ["DELETE", "PUT"]
    # Deleting again is idempotent; re-creating continues the version sequence.
    assert call(uow, ctx, "DELETE", "Patient/del").status == 204
    again = call(uow, ctx, "PUT", "Patient/del", patient(id="del"))
    assert again.status == 201 and again.json["meta"]["versionId"] == "3"
    assert call(uow, ctx, "GET", "Patient?_id=del").json["total"] == 1


def test_conditional_create_returns_existing_match(uow: UnitOfWork, ctx: FhirContext) -> None:
    body = patient(identifier=[{"system": "urn:oid:2.16.156.10011.1.3", "value": "cc-1"}])
    h = {"If-None-Exist": "identifier=urn:oid:2.16.156.10011.1.3|cc-1"}
    first = call(uow, ctx, "POST", "Patient", body, headers=h)
    second = call(uow, ctx, "POST", "Patient", body, headers=h)
    assert first.status == 201 and second.status == 200
    assert first.json["id"] == second.json["id"]
    found = call(uow, ctx, "GET", "Patient?identifier=urn:oid:2.16.156.10011.1.3|cc-1")
    assert found.json["total"] == 1


def test_conditional_create_with_two_matches_is_412(uow: UnitOfWork, ctx: FhirContext) -> None:
    body = patient(identifier=[{"system": "urn:x", "value": "dup"}])
    call(uow, ctx, "POST", "Patient", body)
    call(uow, ctx, "POST", "Patient", body)
    r = call(uow, ctx, "POST", "Patient", body, headers={"If-None-Exist": "identifier=urn:x|dup"})
    assert r.status == 412


def test_conditional_update_and_delete(uow: UnitOfWork, ctx: FhirContext) -> None:
    body = patient(identifier=[{"system": "urn:x", "value": "cu"}])
    created = call(uow, ctx, "PUT", "Patient?identifier=urn:x|cu", body)
    assert created.status == 201
    updated = call(uow, ctx, "PUT", "Patient?identifier=urn:x|cu", {**body, "gender": "female"})
    assert updated.status == 200 and updated.json["id"] == created.json["id"]
    assert updated.json["meta"]["versionId"] == "2"
    assert call(uow, ctx, "DELETE", "Patient?identifier=urn:x|cu").status == 204
    assert call(uow, ctx, "GET", f"Patient/{created.json['id']}").status == 410


def test_prefer_return_minimal_and_operation_outcome(uow: UnitOfWork, ctx: FhirContext) -> None:
    minimal = call(uow, ctx, "POST", "Patient", patient(), headers={"Prefer": "return=minimal"})
    assert minimal.status == 201 and minimal.json is None and "Location" in minimal.headers
    oo = call(uow, ctx, "POST", "Patient", patient(), headers={"Prefer": "return=OperationOutcome"})
    assert oo.json["resourceType"] == "OperationOutcome"


def test_conditional_read_not_modified(uow: UnitOfWork, ctx: FhirContext) -> None:
    call(uow, ctx, "PUT", "Patient/cr", patient(id="cr"))
    assert call(uow, ctx, "GET", "Patient/cr", headers={"If-None-Match": 'W/"1"'}).status == 304
    assert call(uow, ctx, "GET", "Patient/cr", headers={"If-None-Match": 'W/"0"'}).status == 200
    r = call(uow, ctx, "GET", "Patient/cr", headers={"If-Modified-Since": "Fri, 01 Jan 2100 00:00:00 GMT"})
    assert r.status == 304
    assert (
        call(
            uow, ctx, "GET", "Patient/cr", headers={"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}
        ).status
        == 200
    )
    # A value that is not a date is ignored (RFC 9110 13.1.3): the resource is sent, never a 500.
    for junk in ("garbage", "Fri, 99 Foo 2100 99:99:99 GMT", "2100-13-45", "\x00"):
        r = call(uow, ctx, "GET", "Patient/cr", headers={"If-Modified-Since": junk})
        assert r.status == 200 and r.json["id"] == "cr", junk


def test_conditional_read_in_a_batch_takes_an_instant(uow: UnitOfWork, ctx: FhirContext) -> None:
    """A batch entry's ``request.ifModifiedSince`` is a FHIR instant, not an HTTP date."""
    call(uow, ctx, "PUT", "Patient/crb", patient(id="crb"))

    def entry(since: str) -> dict[str, Any]:
        return {"request": {"method": "GET", "url": "Patient/crb", "ifModifiedSince": since}}

    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [entry("2100-01-01T00:00:00Z"), entry("2001-01-01T00:00:00+08:00")],
    }
    r = call(uow, ctx, "POST", "", batch)
    assert r.status == 200, r
    statuses = [e["response"]["status"] for e in r.json["entry"]]
    assert statuses[0].startswith("304") and statuses[1].startswith("200"), statuses


def test_referential_integrity(uow: UnitOfWork, ctx: FhirContext) -> None:
    obs = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "体温"},
        "subject": {"reference": "Patient/nobody"},
    }
    r = call(uow, ctx, "POST", "Observation", obs)
    assert r.status == 422
    assert "Patient/nobody" in r.json["issue"][0]["diagnostics"]
    assert r.json["issue"][0]["expression"] == ["Observation.subject"]
    call(uow, ctx, "PUT", "Patient/somebody", patient(id="somebody"))
    obs["subject"] = {"reference": "Patient/somebody"}
    made = call(uow, ctx, "POST", "Observation", obs)
    assert made.status == 201
    blocked = call(uow, ctx, "DELETE", "Patient/somebody")
    assert blocked.status == 409 and "Observation/" in blocked.json["issue"][0]["diagnostics"]
    assert call(uow, ctx, "GET", "Patient/somebody").status == 200
    assert call(uow, ctx, "DELETE", f"Observation/{made.json['id']}").status == 204
    assert call(uow, ctx, "DELETE", "Patient/somebody").status == 204


def test_invalid_resource_is_rejected_with_path(uow: UnitOfWork, ctx: FhirContext) -> None:
    bad = {"resourceType": "Patient", "gender": "unknown-gender", "birthDate": "2020-13-45"}
    r = call(uow, ctx, "POST", "Patient", bad)
    assert r.status in (400, 422)
    paths = {e for i in r.json["issue"] for e in i.get("expression", [])}
    assert "Patient.gender" in paths and "Patient.birthDate" in paths
    assert call(uow, ctx, "GET", "Patient?gender=unknown-gender").json["total"] == 0


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"name": "no resourceType"},
        {"resourceType": "Patient", "unknownElement": 1},
        {"resourceType": "Observation", "status": "final"},
    ],
)
def test_bad_bodies_never_500(uow: UnitOfWork, ctx: FhirContext, body: Any) -> None:
    r = call(
        uow,
        ctx,
        "POST",
        "Patient"
        if not isinstance(body, dict) or body.get("resourceType") != "Observation"
        else "Observation",
        body,
    )
    assert 400 <= r.status < 500
    assert r.json["resourceType"] == "OperationOutcome"


def test_history_type_and_system_with_since_and_paging(uow: UnitOfWork, ctx: FhirContext) -> None:
    for i in range(5):
        call(uow, ctx, "PUT", f"Patient/h{i}", patient(id=f"h{i}"))
    # Instants are to the millisecond and _since includes its own millisecond: the update below
    # must land in a later one than h4's create (CI once wrote both within the same).
    time.sleep(0.002)
    call(uow, ctx, "PUT", "Patient/h0", patient(id="h0", gender="female"))
    page = call(uow, ctx, "GET", "Patient/_history?_count=2").json
    assert page["type"] == "history" and len(page["entry"]) == 2
    assert any(link["relation"] == "next" for link in page["link"])
    seen = []
    url = "Patient/_history?_count=2"
    while url:
        b = call(uow, ctx, "GET", url).json
        seen += [(e["resource"]["id"], e["resource"]["meta"]["versionId"]) for e in b.get("entry", [])]
        nxt = [link["url"] for link in b["link"] if link["relation"] == "next"]
        url = nxt[0].split("/fhir/", 1)[1] if nxt else ""
    mine = [s for s in seen if s[0].startswith("h")]
    assert len(mine) == 6 and len(set(mine)) == 6
    assert mine[0] == ("h0", "2")  # newest first
    since = page["entry"][0]["response"]["lastModified"]
    recent = call(uow, ctx, "GET", f"_history?_since={since}").json
    assert {e["resource"]["id"] for e in recent["entry"]} == {"h0"}


def test_search_basics(uow: UnitOfWork, ctx: FhirContext) -> None:
    call(uow, ctx, "PUT", "Patient/s1", patient("张", "伟", id="s1", birthDate="1980-05-01"))
    call(uow, ctx, "PUT", "Patient/s2", patient("Zhāng", "Wěi", id="s2", birthDate="1990-01-01"))
    call(uow, ctx, "PUT", "Patient/s3", patient("Li", "Na", id="s3", gender="female"))
    assert ids(call(uow, ctx, "GET", "Patient?name=张伟").json) == {"s1"}
    assert ids(call(uow, ctx, "GET", "Patient?family=zhang").json) == {"s2"}
    assert ids(call(uow, ctx, "GET", "Patient?family:exact=Zhāng").json) == {"s2"}
    assert ids(call(uow, ctx, "GET", "Patient?birthdate=ge1985&_id=s1,s2,s3").json) == {"s2"}
    assert ids(call(uow, ctx, "GET", "Patient?gender:not=female&_id=s1,s2,s3").json) == {"s1", "s2"}
    assert ids(call(uow, ctx, "GET", "Patient?birthdate:missing=true&_id=s1,s2,s3").json) == {"s3"}
    sorted_ = call(uow, ctx, "GET", "Patient?_id=s1,s2,s3&_sort=-birthdate").json
    assert [e["resource"]["id"] for e in sorted_["entry"]] == ["s2", "s1", "s3"]
    r = call(uow, ctx, "GET", "Patient?birthdate=not-a-date")
    assert r.status == 400
    r = call(uow, ctx, "GET", "Patient?foo=bar", headers={"Prefer": "handling=strict"})
    assert r.status == 400
    lenient = call(uow, ctx, "GET", "Patient?foo=bar&_id=s1")
    assert lenient.status == 200 and ids(lenient.json) == {"s1"}


def test_an_update_after_other_writes_in_one_unit_of_work_keeps_its_version_and_index(
    uow: UnitOfWork, ctx: FhirContext
) -> None:
    """A Task holds patient data outside the compartment: deciding its patient reads the stored
    keys of what it refers to, which sends the unit of work's buffered rows first. The update's
    own version and index rows must still be written (an HL7 REF^I13 changes a referral and its
    Task in one transaction, and the Task was left unsearchable)."""
    call(uow, ctx, "PUT", "Patient/t-p", patient(id="t-p"))
    order = {"resourceType": "ServiceRequest", "id": "t-sr", "status": "active", "intent": "order",
             "subject": {"reference": "Patient/t-p"}}  # fmt: skip
    call(uow, ctx, "PUT", "ServiceRequest/t-sr", order)
    task = {"resourceType": "Task", "id": "t-task", "status": "requested", "intent": "order",
            "identifier": [{"system": "urn:t", "value": "R-1"}], "focus": {"reference": "ServiceRequest/t-sr"},
            "for": {"reference": "Patient/t-p"}}  # fmt: skip
    assert call(uow, ctx, "PUT", "Task/t-task", task).status == 201
    # Both changed in the same unit of work, the referral first (its rows are still buffered).
    assert call(uow, ctx, "PUT", "ServiceRequest/t-sr", {**order, "priority": "stat"}).status == 200
    assert call(uow, ctx, "PUT", "Task/t-task", {**task, "status": "cancelled"}).status == 200
    found = call(uow, ctx, "GET", "Task?identifier=urn:t|R-1").json
    assert [e["resource"]["status"] for e in found.get("entry", [])] == ["cancelled"]
    assert call(uow, ctx, "GET", "Task?status=cancelled").json.get("total") == 1
    history = call(uow, ctx, "GET", "Task/t-task/_history").json
    assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["2", "1"]


def test_a_transaction_may_not_name_one_resource_twice(uow: UnitOfWork, ctx: FhirContext) -> None:
    """FHIR R4 transactions: the identities entries resolve to (a conditional create that
    matches, a conditional update, a delete) must not overlap; the whole transaction fails."""
    ident = {"system": "http://example.org/fhir/ids", "value": "dup-1"}
    assert call(uow, ctx, "PUT", "Patient/dup1", patient(id="dup1", identifier=[ident])).status == 201
    both = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": patient(family="李", identifier=[ident]),
                "request": {"method": "PUT", "url": "Patient?identifier=http://example.org/fhir/ids|dup-1"},
            },
            {
                "resource": patient(family="张", identifier=[ident]),
                "request": {
                    "method": "POST",
                    "url": "Patient",
                    "ifNoneExist": "identifier=http://example.org/fhir/ids|dup-1",
                },
            },
        ],
    }
    r = call(uow, ctx, "POST", "", both)
    assert (
        r.status == 400
        and "Patient/dup1 is written by more than one entry" in r.json["issue"][0]["diagnostics"]
    )
    deleted_and_written = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"request": {"method": "DELETE", "url": "Patient/dup1"}},
            {
                "resource": patient(id="dup1", family="赵"),
                "request": {"method": "PUT", "url": "Patient/dup1"},
            },
        ],
    }
    r = call(uow, ctx, "POST", "", deleted_and_written)
    assert (
        r.status == 400
        and "Patient/dup1 is written by more than one entry" in r.json["issue"][0]["diagnostics"]
    )
    kept = call(uow, ctx, "GET", "Patient/dup1")
    assert (
        kept.status == 200
        and kept.json["meta"]["versionId"] == "1"
        and kept.json["name"][0]["family"] == "王"
    )


@pytest.mark.parametrize("method", ["PUT", "DELETE"])
def test_a_conditional_write_without_criteria_is_a_bad_request(
    uow: UnitOfWork, ctx: FhirContext, method: str
) -> None:
    body = patient() if method == "PUT" else None
    r = call(uow, ctx, method, "Patient", body)
    assert r.status == 400 and "needs search criteria" in r.json["issue"][0]["diagnostics"]
