"""Reading back the AuditEvents a ``yilian`` command records as the operator at the console."""

from __future__ import annotations

import getpass

from sqlalchemy import select

from yilian.db import Database
from yilian.security.audit import AuditRow
from yilian.security.audit.tables import audit_event


def audits(db: Database, subtype: str) -> list[AuditRow]:
    """Every row of the log with ``subtype``, oldest first."""
    with db.engine.connect() as conn:
        rows = conn.execute(
            select(audit_event).where(audit_event.c.subtype == subtype).order_by(audit_event.c.id)
        )
        return [AuditRow.of(r) for r in rows.mappings()]


def by_the_operator(row: AuditRow, action: str, outcome: int = 0) -> str:
    """The row's outcomeDesc, once the row is checked to be ``action`` by the operator at the console
    (the login name of whoever ran the command, no institution)."""
    assert (row.action, row.agent_kind, row.agent_id, row.outcome, row.org_id) == (
        action, "operator", getpass.getuser(), outcome, None,
    )  # fmt: skip
    event = row.resource()
    assert event["agent"][0]["name"] == "yilian command line"
    return str(event["outcomeDesc"])
