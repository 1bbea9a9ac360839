"""On the city node, two districts' records under one client-assigned id: a forwarded write that
would replace another district's record of a patient is refused (409), never a silent
overwrite; the same district's later versions, and shared registry data, go through."""

from __future__ import annotations

from typing import Any

from tests.integration.exchange.test_outbound import SETTINGS, tag
from tests.support.fhir_calls import Call, call
from yilian.db import Database, UnitOfWork
from yilian.exchange.outbound.forwarding import source_stamp
from yilian.fhir import FhirContext

DISTRICT_A = "http://district-a.example:8080/fhir"
DISTRICT_B = "http://district-b.example:8080/fhir"


def forwarded(db: Database, resource: dict[str, Any], source: str, version: int) -> Call:
    """What a district's forwarder sends: PUT Type/id with its meta.source stamp."""
    body = {
        **resource,
        "meta": {"source": source_stamp(source, resource["resourceType"], resource["id"], version)},
    }
    with UnitOfWork(db, write=True) as uow:
        ctx = FhirContext(base_url="http://city/fhir", settings=SETTINGS)
        return call(uow, ctx, "PUT", f"{resource['resourceType']}/{resource['id']}", body)


def patient(pid: str, family: str) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": pid,
        "name": [{"family": family, "given": ["伟"]}],
        "gender": "male",
    }


def test_another_districts_record_under_the_same_id_is_refused(db: Database) -> None:
    pid = f"hosp-{tag()}"
    assert forwarded(db, patient(pid, "张"), DISTRICT_A, 1).status == 201
    assert forwarded(db, patient(pid, "张三"), DISTRICT_A, 2).status == 200  # its own next version
    clash = forwarded(db, patient(pid, "李"), DISTRICT_B, 1)
    assert clash.status == 409, clash
    assert DISTRICT_A in str(clash.json) and "region-unique" in str(clash.json)
    with UnitOfWork(db) as uow:
        kept = call(uow, FhirContext(settings=SETTINGS), "GET", f"Patient/{pid}")
    assert kept.json["name"][0]["family"] == "张三"  # district A's record is intact
    # Clinical data in the patient's compartment is guarded the same way.
    obs = {
        "resourceType": "Observation",
        "id": f"obs-{pid}",
        "status": "final",
        "code": {"text": "体温"},
        "subject": {"reference": f"Patient/{pid}"},
    }
    assert forwarded(db, obs, DISTRICT_A, 1).status == 201
    assert forwarded(db, {**obs, "status": "amended"}, DISTRICT_B, 1).status == 409


def test_shared_registry_data_and_local_writes_are_not_guarded(db: Database) -> None:
    oid = f"org-{tag()}"
    org = {"resourceType": "Organization", "id": oid, "name": "湖州市中心医院"}
    assert forwarded(db, org, DISTRICT_A, 1).status == 201
    assert forwarded(db, {**org, "name": "湖州市中心医院 (B)"}, DISTRICT_B, 1).status == 200
    # A write made on the city itself (no forwarding stamp) is the city's business.
    pid = f"local-{tag()}"
    assert forwarded(db, patient(pid, "王"), DISTRICT_A, 1).status == 201
    with UnitOfWork(db, write=True) as uow:
        done = call(uow, FhirContext(settings=SETTINGS), "PUT", f"Patient/{pid}", patient(pid, "王五"))
    assert done.status == 200
