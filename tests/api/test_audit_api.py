"""Every access is one AuditEvent in the log, searchable by auditors — whose own searches are logged."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import httpx
import pytest

from tests.support.auth import bearer, system_token
from tests.support.paths import ROOT
from tests.support.server import RunningServer, database_url
from yilian.db import Database


def events(server: RunningServer, auth: dict[str, str], query: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{server.base}/fhir/AuditEvent?{query}", headers=auth, timeout=30)
    assert r.status_code == 200, r.text
    return [e["resource"] for e in r.json().get("entry", [])]


def subtype(ev: dict[str, Any]) -> str:
    return str(ev["subtype"][0]["code"])


@pytest.fixture(scope="module")
def seeded(server: RunningServer, auth: dict[str, str]) -> dict[str, str]:
    base = f"{server.base}/fhir"
    httpx.put(
        f"{base}/Organization/aud-org",
        json={"resourceType": "Organization", "id": "aud-org", "name": "县医院"},
        headers=auth,
    ).raise_for_status()
    httpx.put(
        f"{base}/Patient/aud-p",
        json={"resourceType": "Patient", "id": "aud-p", "name": [{"family": "孙"}]},
        headers=auth,
    ).raise_for_status()
    return {"patient": "aud-p"}


def test_read_search_write_and_denial_are_each_recorded(
    server: RunningServer, db: Database, auth: dict[str, str], seeded: dict[str, str]
) -> None:
    base = f"{server.base}/fhir"
    org_token = system_token(db, scopes="system/*.rs", org_id="aud-org", name="县医院 HIS")
    org = bearer(org_token)
    assert httpx.get(f"{base}/Patient/aud-p", headers=auth).status_code == 200
    assert httpx.get(f"{base}/Patient?name=孙", headers=auth).status_code == 200
    created = httpx.post(
        f"{base}/Observation",
        json={
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "体重"},
            "subject": {"reference": "Patient/aud-p"},
        },
        headers=auth,
    )
    assert created.status_code == 201
    assert (
        httpx.get(f"{base}/Patient/aud-p", headers=org).status_code == 404
    )  # no reason: refused, and recorded
    assert (
        httpx.post(f"{base}/Patient", json={"resourceType": "Patient"}, headers=org).status_code == 403
    )  # scope
    mine = events(server, auth, "patient=Patient/aud-p&_count=50")
    kinds = [subtype(e) for e in mine]
    assert {"read", "search-type", "create"} <= set(kinds)
    search = next(e for e in mine if subtype(e) == "search-type")
    assert any(ent.get("what", {}).get("reference") == "Patient/aud-p" for ent in search["entity"])
    denied = events(server, auth, "subtype=access-denied&_count=50")
    assert any(e["outcome"] != "0" for e in denied)
    org_view = events(server, auth, "org=aud-org&_count=50")
    assert org_view and all(e["agent"][0]["who"]["identifier"]["value"] for e in org_view)


def test_break_glass_is_flagged_for_review(
    server: RunningServer, db: Database, auth: dict[str, str], seeded: dict[str, str]
) -> None:
    org = bearer(system_token(db, scopes="system/*.rs", org_id="aud-org", name="急诊"))
    headers = {
        **org,
        "X-Purpose-Of-Use": "BTG",
        "X-Break-Glass-Reason": "unconscious patient, no relatives reachable",
    }
    assert httpx.get(f"{server.base}/fhir/Patient/aud-p", headers=headers).status_code == 200
    flagged = events(server, auth, "flagged=true&_count=50")
    assert any(e.get("purposeOfEvent") and subtype(e) == "read" for e in flagged)


def test_auditors_see_their_own_part_and_their_searches_are_logged(
    server: RunningServer, db: Database, auth: dict[str, str], seeded: dict[str, str]
) -> None:
    org = bearer(system_token(db, scopes="system/*.rs", org_id="aud-org", name="审计员"))
    # Something of the institution's own in the log, whatever ran before: a read it had no reason for.
    assert httpx.get(f"{server.base}/fhir/Patient/aud-p", headers=org).status_code == 404
    own = events(server, org, "_count=100")
    assert own and all(
        any(a.get("who", {}).get("identifier", {}).get("value") for a in e["agent"]) for e in own
    )
    # The institution's auditor sees only events of its own institution.
    ids = {e["id"] for e in own}
    everything = {e["id"] for e in events(server, auth, "_count=200")}
    assert ids < everything
    time.sleep(0.2)
    log = events(server, auth, "subtype=search-type&_count=20")
    assert any("AuditEvent" in str(e.get("entity", [])) for e in log)
    # Writing to the log through the API is refused.
    assert (
        httpx.post(
            f"{server.base}/fhir/AuditEvent", json={"resourceType": "AuditEvent"}, headers=auth
        ).status_code
        == 405
    )


def test_chain_verifies_and_detects_tampering_through_the_cli(
    server: RunningServer, db: Database, auth: dict[str, str], seeded: dict[str, str]
) -> None:
    url = database_url(db)
    ok = subprocess.run(
        [sys.executable, "-m", "yilian.cli.main", "audit", "verify", "--database", url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "intact" in ok.stdout
