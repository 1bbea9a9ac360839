"""Whose data left in a bulk export: the kick-off and every download name the patients, on
SQLite and PostgreSQL (as a search records the patients it returned), bounded for exports that
carry a whole region."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from tests.integration.exchange import test_bulk_export as bx
from yilian.api.app import YilianApp
from yilian.db import Database
from yilian.exchange.bulk import export
from yilian.security.audit import AuditRow
from yilian.security.audit.tables import audit_event

# The export tests' fixtures, on this module's own database: two institutions, three patients each.
bulk_dir, app, operator, orgs, data = bx.bulk_dir, bx.app, bx.operator, bx.orgs, bx.data
A_PATIENTS = {"bxa-p0", "bxa-p1", "bxa-p2"}


def job_audit(db: Database, status: str) -> dict[str, AuditRow]:
    job_id = status.rsplit("/", 1)[1]
    with db.engine.connect() as conn:
        rows = conn.execute(select(audit_event).where(audit_event.c.entity.like(f"bulk-job/{job_id}%")))
        return {r.entity or "": r for r in (AuditRow.of(m) for m in rows.mappings())}


def exported(app: YilianApp, path: str, headers: dict[str, str]) -> tuple[str, dict[str, Any]]:
    status = bx.kick_off(app, path, headers)
    manifest = bx.finish(app, status, headers)
    bx.download(app, manifest, headers)
    return status, manifest


def test_each_download_records_the_patients_whose_data_it_carries(
    app: YilianApp, db: Database, orgs: dict[str, dict[str, str]], data: dict[str, list[str]]
) -> None:
    status, manifest = exported(app, "/fhir/$export", orgs[bx.ORG_A])
    job = status.rsplit("/", 1)[1]
    rows = job_audit(db, status)
    types = {item["type"] for item in manifest["output"]}
    assert {"Patient", "Observation"} <= types
    for t in types:
        row = rows[f"bulk-job/{job}/{t}.ndjson"]
        want = A_PATIENTS if t in ("Patient", "Observation") else set()
        assert set(row.patient_keys) == want, t
        event = row.resource()
        named = {e["what"]["reference"] for e in event["entity"] if e.get("role", {}).get("code") == "1"}
        assert named == {f"Patient/{p}" for p in want}
        assert "outcomeDesc" not in event


def test_a_kick_off_records_the_patients_asked_for(
    app: YilianApp, db: Database, operator: dict[str, str], data: dict[str, list[str]]
) -> None:
    status = bx.kick_off(app, "/fhir/Patient/$export?patient=Patient/bxb-p1", operator)
    row = job_audit(db, status)[f"bulk-job/{status.rsplit('/', 1)[1]}"]
    assert row.patient_keys == ("bxb-p1",)


def test_a_download_of_more_patients_than_the_bound_names_the_first_and_says_so(
    app: YilianApp,
    db: Database,
    orgs: dict[str, dict[str, str]],
    data: dict[str, list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(export, "AUDIT_PATIENTS", 2)
    status, _ = exported(app, "/fhir/$export?_type=Patient", orgs[bx.ORG_A])
    [row] = [r for entity, r in job_audit(db, status).items() if entity.endswith("/Patient.ndjson")]
    assert len(row.patient_keys) == 2 and set(row.patient_keys) <= A_PATIENTS
    assert "more than 2 patients: the first 2 are recorded" in row.resource()["outcomeDesc"]
