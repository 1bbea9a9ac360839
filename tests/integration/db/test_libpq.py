"""``yilian.db.libpq``: one statement handed straight to libpq (the audit writer's group commit).

It must store exactly what psycopg's own path stores, refuse what psycopg refuses, raise the
same classes of error, and never apply where it would skip psycopg's work: a connection that
is not in autocommit mode (psycopg would have opened a transaction first), or SQLite.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    insert,
    select,
    text,
)
from sqlalchemy.exc import DataError, IntegrityError, OperationalError

from tests.support.databases import BACKENDS, drop_database, new_database
from yilian.db import Database, libpq
from yilian.db.dialect import driver_errors

_md = MetaData()
sample = Table(
    "test_libpq_sample",
    _md,
    Column("id", Integer, primary_key=True),
    Column("big", BigInteger),
    Column("flag", Boolean),
    Column("words", Text),
    Column("blob", LargeBinary),
    Column("maybe", Text, nullable=True),
    Column("needed", Text, nullable=False),
)
COLUMNS = ("id", "big", "flag", "words", "blob", "maybe", "needed")
INSERT = (
    f"INSERT INTO {sample.name} ({', '.join(COLUMNS)}) VALUES ({libpq.placeholders(len(COLUMNS))}) RETURNING id"
).encode()

ROWS: list[dict[str, Any]] = [
    {
        "id": 1,
        "big": 2**62 + 7,
        "flag": True,
        "words": "王芳 'quoted' \\ back\nslash; --",
        "blob": bytes(range(256)),  # every byte, NUL and high bytes included
        "maybe": None,
        "needed": "x",
    },
    {"id": 2, "big": -1, "flag": False, "words": "", "blob": b"", "maybe": "𠀀 astral", "needed": "y"},
    {"id": 3, "big": 0, "flag": None, "words": None, "blob": b"\x00", "maybe": "", "needed": "z"},
]


def with_table(db: Database) -> Iterator[Database]:
    with db.engine.begin() as conn:
        sample.drop(conn, checkfirst=True)
        sample.create(conn)
    yield db
    with db.engine.begin() as conn:
        sample.drop(conn, checkfirst=True)


@pytest.fixture
def table(db: Database) -> Iterator[Database]:
    yield from with_table(db)


@pytest.fixture(scope="module", params=[b for b in BACKENDS if b == "postgresql"])
def pg_db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    """The rest is about what libpq does, which only PostgreSQL has: on SQLite ``direct`` is
    None (the first test), and the writer takes the driver's own path."""
    database, token = new_database(request.param, tmp_path_factory.mktemp("libpq"))
    yield database
    drop_database(request.param, database, token)


@pytest.fixture
def pg(pg_db: Database) -> Iterator[Database]:
    yield from with_table(pg_db)


@pytest.fixture
def autocommit(pg: Database) -> Iterator[Connection]:
    with pg.connect_autocommit() as conn:
        yield conn


def stored(db: Database) -> list[dict[str, Any]]:
    with db.engine.connect() as conn:
        out = [dict(r) for r in conn.execute(select(sample).order_by(sample.c.id)).mappings()]
    return [{**r, "blob": None if r["blob"] is None else bytes(r["blob"])} for r in out]


def run(conn: Connection, row: dict[str, Any]) -> list[int]:
    pgconn = libpq.direct(conn)
    assert pgconn is not None
    with driver_errors(conn, INSERT.decode()):
        result = libpq.execute(pgconn, INSERT, [row[c] for c in COLUMNS])
    return [int(result.get_value(i, 0) or 0) for i in range(result.ntuples)]


def test_it_applies_only_to_postgresql_in_autocommit_mode(table: Database) -> None:
    with table.connect_autocommit() as conn:
        if table.is_sqlite:
            assert libpq.direct(conn) is None
            return
        assert libpq.direct(conn) is not None
    with table.engine.connect() as plain:  # psycopg opens a transaction before its first statement
        assert libpq.direct(plain) is None
    with table.connect_autocommit() as conn:  # text is sent as UTF-8: another client encoding, no
        conn.exec_driver_sql("SET client_encoding TO 'LATIN1'")
        assert libpq.direct(conn) is None
        conn.invalidate()  # not back into the pool with that setting


def test_values_are_stored_as_psycopgs_own_path_stores_them(pg: Database, autocommit: Connection) -> None:
    assert [run(autocommit, row) for row in ROWS] == [[1], [2], [3]]  # RETURNING read back
    through_libpq = stored(pg)
    with pg.engine.begin() as conn:
        conn.execute(sample.delete())
        conn.execute(insert(sample), ROWS)
    assert through_libpq == stored(pg) == ROWS


def test_errors_are_the_classes_psycopg_raises_and_nothing_is_stored(
    pg: Database, autocommit: Connection
) -> None:
    good = ROWS[0]
    # A NUL in text: libpq would cut the value at it; refused before anything is sent.
    with pytest.raises(DataError, match="NUL"):
        run(autocommit, {**good, "words": "before\x00after"})
    with pytest.raises(IntegrityError):  # NOT NULL
        run(autocommit, {**good, "needed": None})
    run(autocommit, good)
    with pytest.raises(IntegrityError):  # the same primary key again
        run(autocommit, good)
    with pytest.raises(TypeError, match="float"):
        libpq.execute(libpq.direct(autocommit), INSERT, [1.5] * len(COLUMNS))  # type: ignore[arg-type]
    assert stored(pg) == [good]
    # The connection is still usable after each refusal (autocommit: nothing left open).
    assert run(autocommit, ROWS[1]) == [2]


def test_a_lost_connection_is_an_operational_error(pg: Database, autocommit: Connection) -> None:
    pgconn = libpq.direct(autocommit)
    assert pgconn is not None
    with pg.engine.begin() as admin:
        admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pgconn.backend_pid})
    with pytest.raises(OperationalError):
        run(autocommit, ROWS[0])
    autocommit.invalidate()
    assert stored(pg) == []
