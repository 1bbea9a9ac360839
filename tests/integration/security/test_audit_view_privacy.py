"""A resident's view of the audit log: who looked at her record, never the other patients."""

from __future__ import annotations

import base64
from urllib.parse import quote

from tests.integration.security.lookalikes import (
    as_,
    operator,
    resident,
    seed,
)
from yilian.db import UnitOfWork
from yilian.security.audit import AuditRecord, flush, record


def test_a_resident_sees_who_looked_at_her_record_but_not_the_other_patients(uow: UnitOfWork) -> None:
    seed(uow)
    search = AuditRecord(
        action="E",
        subtype="search-type",
        agent_kind="system",
        agent_id="client-org-a",
        org_id="org-a",
        patient_keys=("pa", "pb"),
        query="Patient?name=王芳&birthdate=1980-05-12",
        outcome_desc="2 found: Patient/pa",
    )
    read = AuditRecord(
        action="R",
        subtype="read",
        agent_kind="system",
        agent_id="client-org-b",
        org_id="org-b",
        patient_keys=("pb",),
        entity="Patient/pb",
    )
    record(uow, search)
    record(uow, read)
    flush(uow)
    me = resident("pb")
    log = as_(uow, me, "GET", "AuditEvent")
    assert log.status == 200 and len(log.json["entry"]) == 2
    text = str(log.json)
    assert (
        "Patient/pa" not in text
        and "name=" not in text
        and base64.b64encode(b"Patient?name").decode()[:8] not in text
    )
    events = {e["resource"]["subtype"][0]["code"]: e["resource"] for e in log.json["entry"]}
    assert {e.get("what", {}).get("reference") for e in events["search-type"]["entity"]} >= {"Patient/pb"}
    assert events["search-type"]["agent"][0]["altId"] == "client-org-a"  # who looked is shown
    assert events["read"]["entity"][1]["what"]["reference"] == "Patient/pb"  # her own event in full
    one = as_(uow, me, "GET", f"AuditEvent/{events['search-type']['id']}")
    assert one.status == 200 and "Patient/pa" not in str(one.json)
    # Filters that look into the hidden parts find nothing.
    hidden_query = "entity=" + quote("Patient?name=王芳&birthdate=1980-05-12", safe="")
    for q in (
        "patient=Patient/pa",
        "patient=Patient/pb&patient=Patient/pa",
        hidden_query,
        "entity=Patient/pa",
    ):
        assert as_(uow, me, "GET", f"AuditEvent?{q}").json.get("entry") is None, q
    assert len(as_(uow, me, "GET", "AuditEvent?patient=Patient/pb").json["entry"]) == 2
    # The operator's view is whole.
    full = as_(uow, operator("system/*.rs"), "GET", "AuditEvent?patient=Patient/pa")
    assert "Patient/pa" in str(full.json)
