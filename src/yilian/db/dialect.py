"""The few statements whose SQL differs between SQLite and PostgreSQL, in one place."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql, sqlite


def insert_ignore(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert rows, silently skipping those whose primary key already exists."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        conn.execute(postgresql.insert(table).on_conflict_do_nothing(), list(rows))
    else:
        conn.execute(sqlite.insert(table).on_conflict_do_nothing(), list(rows))
