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


def insert_new(conn: Connection, table: Table, row: dict[str, Any]) -> bool:
    """Insert one row unless its key exists; True if this call inserted it. One statement (no
    savepoint): a concurrent insert of the same key still waits for the other transaction to end,
    then skips the row if that one committed, or inserts it if it rolled back."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    # RETURNING rather than rowcount: the driver's rowcount is not dependable for a skipped row.
    key = next(iter(table.primary_key.columns))
    stmt = dialect.insert(table).values(row).on_conflict_do_nothing().returning(key)
    return conn.execute(stmt).first() is not None
