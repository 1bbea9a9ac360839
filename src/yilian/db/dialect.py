"""The few statements whose SQL differs between SQLite and PostgreSQL, in one place."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Engine, Select, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.expression import FromClause


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


class _SQLiteHintingCompiler(sqlite.base.SQLiteCompiler):
    """SQLite's compiler, also rendering table hints (``INDEXED BY``), which SQLAlchemy drops."""

    def get_from_hint_text(self, table: Any, text: str | None) -> str | None:
        return text


def enable_index_hints(engine: Engine) -> None:
    """Let ``with_index`` hints reach SQLite (PostgreSQL has no hints: they are not rendered there)."""
    if engine.dialect.name == "sqlite":
        engine.dialect.statement_compiler = _SQLiteHintingCompiler


def with_index(stmt: Select[Any], table: FromClause, index_name: str) -> Select[Any]:
    """``stmt`` reading ``table`` through ``index_name`` on SQLite (``INDEXED BY``).

    For correlated lookups by ``resource_pk``: without ``sqlite_stat1`` (and often with it) SQLite
    prefers the index that matches more equality terms, (res_type, param, code), and walks every
    row of a common code for each outer row instead of the one or two rows of the resource.
    """
    return stmt.with_hint(table, f"INDEXED BY {index_name}", "sqlite")
