"""Recording an access in the caller's transaction: ``record(uow, AuditRecord(...))``.

Creates, updates, deletes and denials are audited in the very transaction that makes the
change, so a change is never committed without its event nor an event without its change.
The row is built (and checked) when ``record`` is called, and inserted just before the unit
of work commits (in its commit batch, ``UnitOfWork.at_commit``, with the transaction's other
last writes: one round trip on PostgreSQL): the id is then taken moments before the commit, which keeps the order in
which PostgreSQL ids become visible close to the order they were handed out (the sealer waits
at gaps, see ``chain``). ``flush`` inserts earlier, for a caller that wants to read it back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from sqlalchemy import Connection

from yilian.db import UnitOfWork, libpq
from yilian.db.dialect import driver_errors
from yilian.db.statements import Batch
from yilian.security.audit.event import recorded_us, to_audit_event
from yilian.security.audit.model import AuditRecord
from yilian.security.audit.tables import audit_event

_PENDING = "yilian.security.audit.pending"
_HOOK = "yilian.security.audit.hook"


def to_row(record: AuditRecord) -> dict[str, Any]:
    """The ``audit_event`` row for ``record`` (unsealed: no seq, no hashes)."""
    at = recorded_us(record)
    return {
        "recorded": at,
        "action": record.action,
        "subtype": record.subtype,
        "outcome": record.outcome,
        "agent_kind": record.agent_kind,
        "agent_id": record.agent_id,
        "org_id": record.org_id,
        "patient_keys": " ".join(record.patient_keys) or None,
        "entity": record.entity_column,
        "purpose": record.purpose,
        "flagged": record.is_flagged,
        "source_ip": record.source_ip,
        "content": orjson.dumps(to_audit_event(record, at)),
    }


# The columns an unsealed row carries, in the order of the hand-built INSERT below.
_COLUMNS = (
    "recorded", "action", "subtype", "outcome", "agent_kind", "agent_id", "org_id",
    "patient_keys", "entity", "purpose", "flagged", "source_ip", "content",
)  # fmt: skip
_CHUNK = 500  # rows a statement (13 parameters each)
_MARKS = {"qmark": "?", "format": "%s", "pyformat": "%s"}
_insert_sql: dict[tuple[str, int, bool], str] = {}
_libpq_sql: dict[int, bytes] = {}


def _insert_for(paramstyle: str, n: int, returning: bool) -> str:
    key = (paramstyle, n, returning)
    sql = _insert_sql.get(key)
    if sql is None:
        mark = _MARKS[paramstyle]
        values = "(" + ", ".join([mark] * len(_COLUMNS)) + ")"
        sql = _insert_sql[key] = (
            f"INSERT INTO {audit_event.name} ({', '.join(_COLUMNS)}) "
            f"VALUES {', '.join([values] * n)}" + (" RETURNING id" if returning else "")
        )
    return sql


def _libpq_insert(n: int) -> bytes:
    sql = _libpq_sql.get(n)
    if sql is None:
        width = len(_COLUMNS)
        values = ", ".join(f"({libpq.placeholders(width, 1 + r * width)})" for r in range(n))
        sql = _libpq_sql[n] = (
            f"INSERT INTO {audit_event.name} ({', '.join(_COLUMNS)}) VALUES {values} RETURNING id"
        ).encode()
    return sql


def _send(conn: Connection, rows: list[dict[str, Any]]) -> list[int]:
    params = [row[name] for row in rows for name in _COLUMNS]
    pgconn = libpq.direct(conn)
    if pgconn is not None:  # the audit writer's own autocommit connection on PostgreSQL
        # The statement named, not quoted, in an error: decoding it on every call costs.
        with driver_errors(conn, f"INSERT INTO {audit_event.name} ({len(rows)} rows) RETURNING id"):
            result = libpq.execute(pgconn, _libpq_insert(len(rows)), params)
        return sorted(int(result.get_value(i, 0) or 0) for i in range(result.ntuples))
    sql = _insert_for(conn.dialect.paramstyle, len(rows), True)
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    # Errors as SQLAlchemy would raise them (IntegrityError, DataError, OperationalError…): the
    # writer tells a refused row from a failed commit by these classes. No parameters in the
    # message: they are audit rows.
    try:
        with driver_errors(conn, sql):
            cursor.execute(sql, params)
            return sorted(int(r[0]) for r in cursor.fetchall())
    finally:
        cursor.close()


def insert_rows(conn: Connection, rows: list[dict[str, Any]]) -> list[int]:
    """Insert unsealed rows; their ids in the order given.

    Within one INSERT the ids are drawn row by row in the order of the VALUES (the sequence on
    PostgreSQL, the next rowid on SQLite), so sorting what RETURNING gives back pairs them with
    the rows. SQLAlchemy's guaranteed-order form costs four times as much on PostgreSQL.

    The statement goes straight to the driver, on ``conn``'s connection and so in its
    transaction: this runs on the audit writer's thread for every group commit, and building,
    caching and binding the statement through SQLAlchemy cost about 150 Python calls a row there
    (a compartment search is ~1,400), all of it holding the GIL the request threads need. The
    SQL is plain (multi-row VALUES and RETURNING: SQLite 3.35+, PostgreSQL) and the same for
    a given row count, so PostgreSQL prepares it after a few uses. On the writer's own
    connection (PostgreSQL, autocommit) it goes further down, to libpq in one call
    (``db/libpq``): a fifth of the driver's CPU, and the interpreter lock given up and taken
    back once rather than at every step of the protocol.
    """
    return _send(conn, rows) if rows else []


def record(uow: UnitOfWork, record: AuditRecord) -> None:
    """Record ``record`` in ``uow``'s transaction: committed with it, rolled back with it."""
    row = to_row(record)  # a malformed record fails here, in the caller, not at commit
    pending: list[dict[str, Any]] = uow.state.setdefault(_PENDING, [])
    pending.append(row)
    hook: Callable[[], None] | None = uow.state.get(_HOOK)
    if hook is None:
        hook = uow.state[_HOOK] = lambda: _flush_at_commit(uow)
    elif hook in uow.before_commit:
        uow.before_commit.remove(hook)
    # Last among the hooks, so that other buffered writes are flushed before the id is taken.
    uow.before_commit.append(hook)


def _flush_at_commit(uow: UnitOfWork) -> None:
    """The buffered rows into the unit of work's commit batch: sent with the transaction's other
    last writes in one round trip (PostgreSQL), just before the commit."""
    _add_inserts(uow, uow.at_commit)


def flush(uow: UnitOfWork) -> None:
    """Insert the rows ``record`` has buffered in ``uow`` now rather than at commit."""
    batch = Batch(uow.conn)
    _add_inserts(uow, batch)
    batch.send()


def _add_inserts(uow: UnitOfWork, batch: Batch) -> None:
    # No RETURNING: nobody here needs the ids, and it doubles the statement's cost. Straight to
    # the driver, in the unit of work's transaction, as the writer does: every audited create
    # pays this, and SQLAlchemy's statement path cost more than the insert. A batch's errors
    # name no parameters: these are audit rows.
    # Chunked: a statement has at most 32,766 parameters on SQLite, 65,535 on PostgreSQL.
    rows: list[dict[str, Any]] = uow.state.pop(_PENDING, None) or []
    for start in range(0, len(rows), _CHUNK):
        chunk = rows[start : start + _CHUNK]
        batch.add_sql(
            _insert_for(uow.conn.dialect.paramstyle, len(chunk), False),
            [row[name] for row in chunk for name in _COLUMNS],
        )
