"""The PostgreSQL pool: a connection lost while idle is replaced before anyone uses it, and a
connection back in use at once is not pinged (no extra round trip on a busy server's requests)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from tests.support.databases import BACKENDS, PG_URL, drop_database, new_database
from yilian.db import Database, UnitOfWork
from yilian.db import engine as engine_module

pytestmark = pytest.mark.skipif(
    "postgresql" not in BACKENDS, reason="PostgreSQL is not among the test backends"
)

IDLE_S = 0.2


@pytest.fixture
def pg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[tuple[Database, list[int]]]:
    monkeypatch.setattr(engine_module, "PING_AFTER_IDLE_S", IDLE_S)
    db, token = new_database("postgresql", tmp_path)
    db.dispose()  # the migration's connections were made before the counter below
    pings: list[int] = []
    real = db.engine.dialect.do_ping

    def counted(dbapi_conn: Any) -> bool:
        pings.append(1)
        return bool(real(dbapi_conn))

    monkeypatch.setattr(db.engine.dialect, "do_ping", counted)
    yield db, pings
    drop_database("postgresql", db, token)


def backend_pid(db: Database) -> int:
    with UnitOfWork(db) as uow:
        return int(uow.conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def test_a_connection_back_in_use_at_once_is_not_pinged(pg: tuple[Database, list[int]]) -> None:
    db, pings = pg
    first = backend_pid(db)
    for _ in range(5):
        assert backend_pid(db) == first  # the same pooled connection each time
    assert pings == []


def test_a_connection_lost_while_idle_is_replaced_before_use(pg: tuple[Database, list[int]]) -> None:
    db, pings = pg
    lost = backend_pid(db)
    admin = create_engine(
        PG_URL.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        assert conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": lost}).scalar_one()
    admin.dispose()
    time.sleep(IDLE_S * 1.5)
    # The next unit of work gets a live connection: the dead one is found by the ping and dropped.
    replacement = backend_pid(db)
    assert replacement != lost
    assert len(pings) == 1


def test_a_failed_ping_replaces_every_older_pooled_connection(pg: tuple[Database, list[int]]) -> None:
    """A database restart loses every pooled connection at once: one failed ping replaces them all."""
    db, pings = pg
    with UnitOfWork(db) as a, UnitOfWork(db) as b:  # two connections in the pool
        lost = {int(uow.conn.execute(text("SELECT pg_backend_pid()")).scalar_one()) for uow in (a, b)}
    assert len(lost) == 2
    admin = create_engine(
        PG_URL.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        for pid in lost:
            assert conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar_one()
    admin.dispose()
    time.sleep(IDLE_S * 1.5)
    with UnitOfWork(db) as a, UnitOfWork(db) as b:
        now = {int(uow.conn.execute(text("SELECT pg_backend_pid()")).scalar_one()) for uow in (a, b)}
    assert now.isdisjoint(lost) and len(now) == 2
    assert len(pings) == 1  # the second was replaced without a ping of its own
