"""Microsoft FHIR Server's fixtures: the status codes and roll-backs its SOURCE.md lists."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests.conftest import SHARED
from tests.support.fhir_calls import call, ids
from yilian.db import UnitOfWork
from yilian.fhir import FhirContext

PEER = SHARED / "fhir-server-peer-tests" / "microsoft-fhir-server"


def fixture(name: str) -> Any:
    # Some fixtures start with a UTF-8 byte-order mark, as files from Windows tools do.
    return orjson.loads((PEER / name).read_bytes().removeprefix(b"\xef\xbb\xbf"))


def statuses(resp: dict[str, Any]) -> list[str]:
    return [e["response"]["status"].split()[0] for e in resp["entry"]]


def test_transaction_with_all_valid_routes(uow: UnitOfWork, ctx: FhirContext) -> None:
    extra = call(uow, ctx, "POST", "Patient", {"resourceType": "Patient", "active": True}).json
    bundle = fixture("Normative/Bundle-TransactionWithAllValidRoutes.json")
    bundle["entry"].append({"request": {"method": "DELETE", "url": f"Patient/{extra['id']}"}})
    r = call(uow, ctx, "POST", "", bundle)
    assert r.status == 200 and r.json["type"] == "transaction-response"
    assert statuses(r.json) == ["201", "201", "201", "201", "200", "200", "204"]
    assert call(uow, ctx, "GET", f"Patient/{extra['id']}").status == 410
    assert call(uow, ctx, "GET", "Patient/456456").status == 200


def test_transaction_with_valid_bundle_entries(uow: UnitOfWork, ctx: FhirContext) -> None:
    r = call(uow, ctx, "POST", "", fixture("Normative/Bundle-TransactionWithValidBundleEntry.json"))
    assert r.status == 200
    assert all(s.startswith("2") for s in statuses(r.json))


def test_transaction_with_unsupported_entry_persists_nothing(uow: UnitOfWork, ctx: FhirContext) -> None:
    before = call(uow, ctx, "GET", "Patient?_summary=count").json["total"]
    r = call(uow, ctx, "POST", "", fixture("Normative/Bundle-Transaction.json"))
    assert 400 <= r.status < 500 and r.json["resourceType"] == "OperationOutcome"
    assert call(uow, ctx, "GET", "Patient?_summary=count").json["total"] == before
    assert call(uow, ctx, "GET", "Patient/123").status == 404


def test_batch_entries_succeed_or_fail_independently(uow: UnitOfWork, ctx: FhirContext) -> None:
    r = call(uow, ctx, "POST", "", fixture("Normative/Bundle-Batch.json"))
    assert r.status == 200 and r.json["type"] == "batch-response"
    got = statuses(r.json)
    assert len(got) == 10
    assert got[0] == "201" and got[2] in ("200", "201")  # POST Patient, PUT Patient/123
    assert got[7].startswith("4")  # POST ValueSet/$lookup: not supported
    assert got[8] == "200"  # search still runs
    failed = [e for e in r.json["entry"] if not e["response"]["status"].startswith("2")]
    assert all(e["response"]["outcome"]["resourceType"] == "OperationOutcome" for e in failed)
    assert call(uow, ctx, "GET", "Patient/123").status == 200


def test_conditional_create_and_reference_twice_gives_no_duplicate(uow: UnitOfWork, ctx: FhirContext) -> None:
    bundle = fixture("Normative/Bundle-TransactionWithConditionalCreateAndReference.json")
    first = call(uow, ctx, "POST", "", bundle)
    assert first.status == 200, first
    second = call(uow, ctx, "POST", "", bundle)
    assert second.status == 200
    loc1 = first.json["entry"][0]["response"]["location"].split("/_history")[0]
    loc2 = second.json["entry"][0]["response"]["location"].split("/_history")[0]
    assert loc1 == loc2
    assert call(uow, ctx, "GET", "Patient?identifier=|11788759296811&_summary=count").json["total"] == 1
    studies = call(uow, ctx, "GET", f"ImagingStudy?subject={loc1}").json
    assert studies["total"] == 2  # both ImagingStudies refer to the one patient


def test_conditional_update_and_reference_second_run_is_version_2(uow: UnitOfWork, ctx: FhirContext) -> None:
    bundle = fixture("Normative/Bundle-TransactionWithConditionalUpdateAndReference.json")
    first = call(uow, ctx, "POST", "", bundle)
    second = call(uow, ctx, "POST", "", bundle)
    assert first.status == 200 and second.status == 200
    assert second.json["entry"][0]["resource"]["meta"]["versionId"] == "2"
    assert second.json["entry"][0]["response"]["etag"] == 'W/"2"'


def test_transaction_rolls_back_when_a_read_fails(uow: UnitOfWork, ctx: FhirContext) -> None:
    bundle = fixture("Normative/Bundle-TransactionForRollBack.json")
    family = bundle["entry"][0]["resource"]["name"][0]["family"]
    r = call(uow, ctx, "POST", "", bundle)
    assert r.status == 404
    assert "Bundle.entry[1]" in r.json["issue"][0]["diagnostics"]
    assert call(uow, ctx, "GET", f"Patient?family:exact={family}").json["total"] == 0


@pytest.mark.parametrize(
    ("name", "statuses_ok"),
    [
        ("Normative/Bundle-TransactionWithInvalidProcessingRoutes.json", (400,)),
        ("Normative/Bundle-TypeMissing.json", (400,)),
        ("Normative/Bundle-InvalidBundleType.json", (400, 405)),
    ],
)
def test_bad_bundles_are_refused(
    uow: UnitOfWork, ctx: FhirContext, name: str, statuses_ok: tuple[int, ...]
) -> None:
    r = call(uow, ctx, "POST", "", fixture(name))
    assert r.status in statuses_ok and r.json["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("Normative/PatientMissingResourceType.json", "resourceType"),
        ("Normative/ObservationWithNoCode.json", "Observation.code"),
        ("Normative/ObservationWithInvalidStatus.json", "Observation.status"),
        ("Normative/PatientWithUnknownElements.json", "Patient."),
    ],
)
def test_invalid_resources_rejected_naming_the_element(
    uow: UnitOfWork, ctx: FhirContext, name: str, path: str
) -> None:
    body = fixture(name)
    rtype = "Observation" if "Observation" in name else "Patient"
    r = call(uow, ctx, "POST", rtype, body)
    assert r.status in (400, 422), r
    expressions = [e for i in r.json["issue"] for e in i.get("expression", [])]
    assert any(e.startswith(path) for e in expressions), expressions


def test_fhirpath_patch_and_json_patch_bundles(uow: UnitOfWork, ctx: FhirContext) -> None:
    r = call(uow, ctx, "POST", "", fixture("Normative/Bundle-FhirPatch.json"))
    assert r.status == 200 and all(s.startswith("2") for s in statuses(r.json)), r
    pid = "9F746C86-48B4-424D-9F92-1E46215E35D5"
    patched = call(uow, ctx, "GET", f"Patient/{pid}").json
    assert patched["meta"]["versionId"] == "3"
    b = call(uow, ctx, "POST", "", fixture("Normative/Bundle-BinaryPatch.json"))
    assert b.status == 200 and all(s.startswith("2") for s in statuses(b.json)), b
    assert call(uow, ctx, "GET", f"Patient/{pid}").json["gender"] == "female"


def test_search_data_and_includes(uow: UnitOfWork, lenient_ctx: FhirContext) -> None:
    # These fixtures come from a server without referential integrity: entries refer to ones
    # later in the same batch. A deployment can turn the check off; this one does.
    ctx = lenient_ctx
    loaded = call(uow, ctx, "POST", "", fixture("Normative/SearchDataBatch.json"))
    assert loaded.status == 200
    failed = [e for e in loaded.json["entry"] if not e["response"]["status"].startswith("2")]
    # The fixture's one AuditEvent is not valid R4 (no agent, no source, an instant without a
    # time zone); everything else loads.
    assert [e["response"]["outcome"]["issue"][0]["diagnostics"].split(" ")[1] for e in failed] == ["(POST"]
    assert "AuditEvent" in failed[0]["response"]["outcome"]["issue"][0]["diagnostics"]
    inc = call(uow, ctx, "POST", "", fixture("Normative/Includes-TestResources.json"))
    assert inc.status == 200 and all(s.startswith("2") for s in statuses(inc.json)), inc
    patients = call(uow, ctx, "GET", "Patient?_id=searchpatient1,searchpatient2,searchpatient3").json
    assert patients["total"] == 3
    gp = call(uow, ctx, "GET", "Patient?_id=searchpatient2&_include=Patient:general-practitioner").json
    assert any(
        e["search"]["mode"] == "include" and e["resource"]["resourceType"] == "Practitioner"
        for e in gp["entry"]
    )
    obs = call(uow, ctx, "GET", "Observation?_include=Observation:patient&_count=200").json
    included = {e["resource"]["id"] for e in obs.get("entry", []) if e["search"]["mode"] == "include"}
    referenced = {
        e["resource"]["subject"]["reference"].split("/")[-1]
        for e in obs.get("entry", [])
        if e["search"]["mode"] == "match"
        and e["resource"].get("subject", {}).get("reference", "").startswith("Patient/")
    }
    existing = ids(call(uow, ctx, "GET", "Patient?_count=500").json)
    assert included == referenced & existing
    rev = call(uow, ctx, "GET", "Patient?_id=searchpatient1&_revinclude=Observation:patient").json
    rev_obs = {e["resource"]["id"] for e in rev["entry"] if e["search"]["mode"] == "include"}
    direct = ids(call(uow, ctx, "GET", "Observation?patient=Patient/searchpatient1").json)
    assert rev_obs == direct and direct


def test_chaining_sort_and_has_data(uow: UnitOfWork, lenient_ctx: FhirContext) -> None:
    ctx = lenient_ctx
    r = call(uow, ctx, "POST", "", fixture("R4/Bundle-ChainingSortAndSearchValidation.json"))
    assert r.status == 200, r
    services = call(uow, ctx, "GET", "HealthcareService?_count=100").json
    assert services["total"] >= 15
    sorted_names = call(uow, ctx, "GET", "HealthcareService?_sort=name&_count=100").json
    names = [e["resource"].get("name", "").lower() for e in sorted_names["entry"]]
    assert names == sorted(names)
    desc = call(uow, ctx, "GET", "HealthcareService?_sort=-name&_count=100").json
    assert [e["resource"].get("name", "").lower() for e in desc["entry"]] == sorted(names, reverse=True)
    # Reverse chain: services that some PractitionerRole offers, and the chain the other way.
    has = ids(
        call(
            uow, ctx, "GET", "HealthcareService?_has:PractitionerRole:service:_id=" + _first_role(uow, ctx)
        ).json
    )
    assert len(has) >= 1
    role = call(uow, ctx, "GET", "PractitionerRole?_id=" + _first_role(uow, ctx)).json["entry"][0]["resource"]
    svc_ids = {ref["reference"].split("/")[-1] for ref in role.get("healthcareService", [])}
    assert has == svc_ids


def _first_role(uow: UnitOfWork, ctx: FhirContext) -> str:
    roles = call(uow, ctx, "GET", "PractitionerRole?healthcare-service:missing=false&_count=1&_sort=_id").json
    return str(roles["entry"][0]["resource"]["id"])


def test_reference_in_resource_body_transaction(uow: UnitOfWork, ctx: FhirContext) -> None:
    made = call(
        uow,
        ctx,
        "POST",
        "Patient",
        {
            "resourceType": "Patient",
            "identifier": [{"system": "http:/example.org/fhir/ids", "value": "234234"}],
        },
    )
    r = call(uow, ctx, "POST", "", fixture("R4/Bundle-TransactionWithReferenceInResourceBody.json"))
    assert r.status == 200, r
    observations = [e["resource"] for e in r.json["entry"] if e["resource"]["resourceType"] == "Observation"]
    assert [o["subject"]["reference"] for o in observations] == [f"Patient/{made.json['id']}"] * 2
    assert b"urn:uuid:" not in orjson.dumps([e.get("resource") for e in r.json["entry"]])


def test_conditional_reference_matching_nothing_fails_the_transaction(
    uow: UnitOfWork, ctx: FhirContext
) -> None:
    r = call(uow, ctx, "POST", "", fixture("R4/Bundle-TransactionWithReferenceInResourceBody.json"))
    assert r.status == 412
    assert (
        call(uow, ctx, "GET", "Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|420").json["total"] == 0
    )


def test_document_reference_index_values_match_peer() -> None:
    """Our indexer extracts the values Microsoft's does for the same parameters (its .indexes.json)."""
    from yilian.fhir.search.indexer import extract
    from yilian.fhir.search.values import date_range

    doc = fixture("R4/DocumentReference-example-relatesTo-code-appends.json")
    expected = fixture("R4/DocumentReference-example-relatesTo-code-appends.indexes.json")
    rows = extract(doc, "DocumentReference")
    missing = []
    for item in expected:
        code, kind, value = item["code"], item["type"], item["value"]
        if code == "_id":
            continue  # a column of the resource table, not an index row
        if kind == "Token":
            ok = any(
                r["param"] == code
                and r["code"] == value["code"]
                and (value["system"] is None or r["system"] == value["system"])
                for r in rows.get("token", [])
            )
        elif kind == "Reference":
            ok = any(
                r["param"] == code
                and r["target_type"] == value["resourceType"]
                and r["target_id"] == value["resourceId"]
                for r in rows.get("reference", [])
            )
        elif kind == "String":
            ok = any(
                r["param"] == code and r["value_exact"] == value["string"] for r in rows.get("string", [])
            )
        elif kind == "Uri":
            ok = any(r["param"] == code and r["uri"] == value["uri"] for r in rows.get("uri", []))
        elif kind == "Date":
            start = date_range(value["start"])
            ok = start is not None and any(
                r["param"] == code and r["low"] == start[0] for r in rows.get("date", [])
            )
        elif kind == "Composite":
            ref, tok = value["components"][0][0], value["components"][1][0]
            ok = any(
                r["param"] == code
                and r["c1_code"] == f"{ref['resourceType']}/{ref['resourceId']}"
                and r["c2_code"] == tok["code"]
                for r in rows.get("composite", [])
            )
        else:
            ok = False
        if not ok:
            missing.append((code, kind, value))
    assert not missing, missing
