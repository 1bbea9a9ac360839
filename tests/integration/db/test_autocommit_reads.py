"""``Database.connect_autocommit``: a read outside any unit of work (the short read path's access
decision) runs as its own statement, with no transaction opened, none rolled back, and nothing
the pooled connection had prepared thrown away; the connection goes back to the pool as it was."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, Connection, Integer, MetaData, Table, bindparam, select, text, update

from tests.support.databases import BACKENDS, drop_database, new_database
from yilian.db import Database, UnitOfWork, open_database
from yilian.db.statements import Statement

_md = MetaData()
value = Table("test_autocommit_value", _md, Column("id", Integer, primary_key=True), Column("v", Integer))
READ = Statement(lambda _: select(value.c.v).where(value.c.id == bindparam("id", type_=Integer)))


def with_table(db: Database) -> Database:
    with db.engine.begin() as conn:
        value.drop(conn, checkfirst=True)
        value.create(conn)
        conn.execute(value.insert().values(id=1, v=10))
    return db


@pytest.fixture
def table(db: Database) -> Database:
    return with_table(db)


def in_transaction(db: Database, conn: Connection) -> bool:
    driver: Any = conn.connection.dbapi_connection
    if db.is_sqlite:
        return bool(driver.in_transaction)
    from psycopg.pq import TransactionStatus

    return bool(driver.info.transaction_status != TransactionStatus.IDLE)


def test_a_read_opens_no_transaction_and_sees_each_commit(table: Database) -> None:
    db = table
    with db.connect_autocommit() as conn:
        assert READ.one_or_none(conn, {"id": 1}) == (10,)
        assert not in_transaction(db, conn)
        assert conn.execute(select(value.c.v)).scalar_one() == 10  # through SQLAlchemy too
        assert not in_transaction(db, conn)
        with UnitOfWork(db, write=True) as uow:
            uow.conn.execute(update(value).values(v=11))
        assert READ.one_or_none(conn, {"id": 1}) == (11,)  # each statement its own snapshot
    # What a plain connection does instead, for contrast: the statement opens a transaction
    # (on PostgreSQL; SQLite's engine begins only for a unit of work).
    with db.engine.connect() as plain:
        READ.one_or_none(plain, {"id": 1})
        assert in_transaction(db, plain) is (not db.is_sqlite)


def test_the_connection_goes_back_to_the_pool_as_it_was(table: Database) -> None:
    db = table
    with db.connect_autocommit() as conn:
        driver = conn.connection.dbapi_connection
        assert driver is not None
        READ.one_or_none(conn, {"id": 1})
    if not db.is_sqlite:
        assert driver.autocommit is False  # type: ignore[attr-defined]
    # Units of work on the pool are still transactions: a failed one leaves nothing behind.
    for _ in range(3):
        with pytest.raises(RuntimeError), UnitOfWork(db, write=True) as uow:
            uow.conn.execute(update(value).values(v=99))
            raise RuntimeError("rolled back")
    with db.connect_autocommit() as conn:
        assert READ.one_or_none(conn, {"id": 1}) == (10,)


@pytest.fixture
def pg_table(tmp_path: Path) -> Iterator[Database]:
    db, token = new_database("postgresql", tmp_path)
    db.dispose()
    # A pool that hands out one connection again and again, to look at what it keeps.
    one = open_database(db.url.render_as_string(hide_password=False), pool_size=1)
    try:
        yield with_table(one)
    finally:
        one.dispose()
        drop_database("postgresql", db, token)


@pytest.mark.skipif("postgresql" not in BACKENDS, reason="PostgreSQL is not among the test backends")
def test_what_the_connection_prepared_survives_the_read(pg_table: Database) -> None:
    # Prepared statements live in a PostgreSQL session; psycopg drops them all at a ROLLBACK.
    db = pg_table
    with db.connect_autocommit() as conn:
        driver = conn.connection.dbapi_connection
        assert driver is not None
        for _ in range(6):  # psycopg prepares a statement on its fifth use
            conn.execute(text("SELECT v FROM test_autocommit_value WHERE id = :id"), {"id": 1})
        READ.one_or_none(conn, {"id": 1})

    def prepared() -> int:
        # Straight to libpq: psycopg's own execute would begin a transaction on the idle
        # connection sitting in the pool.
        res = driver.pgconn.exec_(b"SELECT count(*) FROM pg_prepared_statements")  # type: ignore[attr-defined]
        return int(res.get_value(0, 0))

    assert prepared() > 0
    # A plain connection's read ends in the pool's ROLLBACK, which takes them all away.
    with db.engine.connect() as plain:
        assert plain.connection.dbapi_connection is driver  # the one connection of this pool
        plain.execute(text("SELECT v FROM test_autocommit_value WHERE id = :id"), {"id": 1})
    assert prepared() == 0
