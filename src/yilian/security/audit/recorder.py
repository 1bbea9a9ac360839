"""Recording an access in the caller's transaction: ``record(uow, AuditRecord(...))``.

Creates, updates, deletes and denials are audited in the very transaction that makes the
change, so a change is never committed without its event nor an event without its change.
The row is built (and checked) when ``record`` is called, and inserted just before the unit
of work commits: the id is then taken moments before the commit, which keeps the order in
which PostgreSQL ids become visible close to the order they were handed out (the sealer waits
at gaps, see ``chain``). ``flush`` inserts earlier, for a caller that wants to read it back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from sqlalchemy import Connection

from yilian.db import UnitOfWork
from yilian.security.audit.event import recorded_us, to_audit_event
from yilian.security.audit.model import AuditRecord
from yilian.security.audit.tables import audit_event

_INSERT = audit_event.insert()
_INSERT_RETURNING = audit_event.insert().returning(audit_event.c.id)
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


def insert_rows(conn: Connection, rows: list[dict[str, Any]]) -> list[int]:
    """Insert unsealed rows; their ids in the order given.

    Within one INSERT the ids are drawn row by row in the order of the VALUES (the sequence on
    PostgreSQL, the next rowid on SQLite), so sorting what RETURNING gives back pairs them with
    the rows. SQLAlchemy's guaranteed-order form costs four times as much on PostgreSQL.
    """
    if not rows:
        return []
    return sorted(int(i) for i in conn.execute(_INSERT_RETURNING, rows).scalars())


def record(uow: UnitOfWork, record: AuditRecord) -> None:
    """Record ``record`` in ``uow``'s transaction: committed with it, rolled back with it."""
    row = to_row(record)  # a malformed record fails here, in the caller, not at commit
    pending: list[dict[str, Any]] = uow.state.setdefault(_PENDING, [])
    pending.append(row)
    hook: Callable[[], None] | None = uow.state.get(_HOOK)
    if hook is None:
        hook = uow.state[_HOOK] = lambda: flush(uow)
    elif hook in uow.before_commit:
        uow.before_commit.remove(hook)
    # Last among the hooks, so that other buffered writes are flushed before the id is taken.
    uow.before_commit.append(hook)


def flush(uow: UnitOfWork) -> None:
    """Insert the rows ``record`` has buffered in ``uow`` now rather than at commit."""
    rows: list[dict[str, Any]] | None = uow.state.pop(_PENDING, None)
    if rows:
        # No RETURNING: nobody here needs the ids, and it doubles the statement's cost.
        uow.conn.execute(_INSERT, rows[0] if len(rows) == 1 else rows)
