"""Fixtures shared by every test.

- ``db``: a migrated database, once per backend (SQLite and PostgreSQL) per test module;
- ``uow``: a unit of work on ``db`` inside a transaction that is rolled back after the test;
- ``ctx``: the FHIR context interactions run in;
- ``client``: an HTTP client for the ASGI app on ``db`` (through httpx, in process).
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.support.databases import BACKENDS, drop_database, new_database
from tests.support.paths import SHARED as SHARED_DATA
from yilian.api.wiring import install_keys
from yilian.db import Database, UnitOfWork
from yilian.fhir import FhirContext, FhirSettings

ROOT = Path(__file__).resolve().parent.parent

# Encryption keys for every server and command the tests start (they inherit the environment):
# fixed test keys, so that processes started at different times read each other's data.
os.environ.setdefault(
    "YILIAN_DATA_KEYS", "t1:" + base64.b64encode(b"yilian-test-data-key-32-bytes!!!").decode()
)
os.environ.setdefault("YILIAN_INDEX_KEY", base64.b64encode(b"yilian-test-index-key-32-bytes!!").decode())
SHARED = SHARED_DATA


@pytest.fixture(scope="session")
def shared_data() -> Path:
    assert SHARED.is_dir(), f"test material missing: {SHARED}"
    return SHARED


@pytest.fixture(scope="module", params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    backend: str = request.param
    database, token = new_database(backend, tmp_path_factory.mktemp(backend))
    install_keys(database)  # sealed at rest, as the server and the CLI do
    yield database
    drop_database(backend, database, token)


@pytest.fixture
def uow(db: Database) -> Iterator[UnitOfWork]:
    conn = db.engine.connect()
    if db.is_sqlite:
        conn = conn.execution_options(yilian_write=True)
    trans = conn.begin()
    try:
        yield UnitOfWork(db, write=True, connection=conn)
    finally:
        trans.rollback()
        conn.close()


@pytest.fixture
def ctx() -> FhirContext:
    return FhirContext(base_url="http://testserver/fhir", settings=FhirSettings())


@pytest.fixture
def lenient_ctx() -> FhirContext:
    """A server that accepts references to resources it does not hold (loading the spec's examples)."""
    return FhirContext(
        base_url="http://testserver/fhir",
        settings=FhirSettings(enforce_referential_integrity=False, enforce_delete_integrity=False),
    )


def count_rows(db: Database, table: str) -> int:
    with db.engine.connect() as conn:
        return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
