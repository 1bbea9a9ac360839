"""ID numbers and phone numbers are sealed at rest: a scan of the database file, its WAL, a
backup and the server's log finds none of them — and they stay searchable by exact value."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.auth import bearer, system_token
from tests.support.databases import PG_URL
from tests.support.server import RunningServer, database_url
from yilian.db import Database
from yilian.db.uow import transact
from yilian.demo import build_demo_region
from yilian.fhir import FhirContext, FhirRequest, dispatch
from yilian.kernel.naming import PRC_RESIDENT_ID

RESIDENTS = 20


def secrets_of(bundles: list[dict[str, Any]]) -> set[str]:
    """Every ID number and phone number in the demo data."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("system") == PRC_RESIDENT_ID and isinstance(node.get("value"), str):
                found.add(node["value"])
            if node.get("system") in ("phone", "sms") and isinstance(node.get("value"), str):
                found.add(node["value"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(bundles)
    return found


@pytest.fixture(scope="module")
def loaded(db: Database) -> tuple[set[str], str]:
    region = build_demo_region(residents=RESIDENTS)
    bundles = region.bundles()
    values = secrets_of(bundles)
    assert len(values) > 2 * RESIDENTS
    patient_ids = secrets_of(
        [e["resource"] for b in bundles for e in b["entry"] if e["resource"]["resourceType"] == "Patient"]
    )
    some_id = next(v for v in sorted(patient_ids) if len(v) == 18)
    ctx = FhirContext(base_url="urn:test")
    for b in build_demo_region(residents=RESIDENTS).bundles():  # a fresh copy: requests own their bodies
        resp = transact(db, lambda uow, body=b: dispatch(uow, ctx, FhirRequest("POST", "", body=body)))
        assert resp.status == 200
    return values, some_id


def _scan(blob: bytes, values: set[str]) -> set[str]:
    return {v for v in values if v.encode() in blob}


def test_nothing_sensitive_in_the_database_files_or_a_backup(
    db: Database, loaded: tuple[set[str], str], tmp_path: Path
) -> None:
    values, _ = loaded
    if db.is_sqlite:
        path = Path(str(db.url.database))
        for suffix in ("", "-wal", "-shm"):
            f = Path(str(path) + suffix)
            if f.exists():
                assert not _scan(f.read_bytes(), values), f"plain values in {f.name}"
        backup = tmp_path / "backup.db"
        # SQLite's online backup, from a connection of the running engine (a second process
        # closing the last handle would check the WAL away under the engine's feet).
        raw = db.engine.raw_connection()
        try:
            target = sqlite3.connect(backup)
            raw.driver_connection.backup(target)
            target.close()
        finally:
            raw.close()
        assert not _scan(backup.read_bytes(), values)
    else:
        pg_dump = shutil.which("pg_dump")
        assert pg_dump, "pg_dump is needed to check a PostgreSQL backup"
        schema = str(db.url.query.get("options", "")).split("search_path=")[-1]
        dump = subprocess.run(
            [pg_dump, "--schema", schema, PG_URL.replace("postgresql+psycopg", "postgresql")],
            capture_output=True,
            check=True,
        ).stdout
        assert schema and len(dump) > 10_000
        assert not _scan(dump, values), "plain values in pg_dump output"


def test_still_searchable_and_read_back_in_clear(
    db: Database, loaded: tuple[set[str], str], tmp_path: Path
) -> None:
    values, some_id = loaded
    log = tmp_path / "server.log"
    token = system_token(db, scopes="system/*.rs")
    with RunningServer(database_url(db), log=log) as srv:
        h = bearer(token)
        found = httpx.get(
            f"{srv.base}/fhir/Patient?identifier={PRC_RESIDENT_ID}|{some_id}", headers=h, timeout=30
        ).json()
        patients = [e["resource"] for e in found.get("entry", []) if e["search"]["mode"] == "match"]
        assert patients, f"a patient is found by the exact ID number: {found}"
        assert any(i.get("value") == some_id for p in patients for i in p.get("identifier", []))
        unsystemed = httpx.get(f"{srv.base}/fhir/Patient?identifier={some_id}", headers=h, timeout=30).json()
        assert {p["id"] for p in patients} <= {e["resource"]["id"] for e in unsystemed.get("entry", [])}
        phone = next(v for v in sorted(values) if len(v) == 11)
        by_phone = httpx.get(f"{srv.base}/fhir/Patient?phone={phone}", headers=h, timeout=30).json()
        related = httpx.get(f"{srv.base}/fhir/RelatedPerson?phone={phone}", headers=h, timeout=30).json()
        assert by_phone.get("total", 0) + related.get("total", 0) >= 1
        # Prefix search cannot work on a blind index, and must not leak through _content either.
        assert (
            httpx.get(f"{srv.base}/fhir/Patient?_content={some_id}", headers=h, timeout=30).json()["total"]
            == 0
        )
    assert not _scan(log.read_bytes(), values), "plain values in the server log"
