"""The few statements whose SQL differs between SQLite and PostgreSQL, in one place."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, Select, Table, delete, insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.expression import FromClause
from sqlalchemy.sql.schema import ScalarElementColumnDefault


@dataclass(frozen=True)
class _PlainInsert:
    """How rows of plain values go into one table on one dialect without SQLAlchemy per row."""

    names: tuple[str, ...]  # the columns a caller's rows fill, in table order
    name_set: frozenset[str]
    defaults: tuple[Any, ...]  # each column's scalar default, used where a row leaves it out
    sql: str | None  # None: the column types cannot go this way

    table: Table

    def fills(self, rows: Sequence[Mapping[str, Any]]) -> bool:
        """Whether every key of every row is one of these columns. A key that is no column of
        the table at all is a caller's mistake, refused rather than dropped (as SQLAlchemy's
        executemany would)."""
        if all(self.name_set.issuperset(r) for r in rows):
            return self.sql is not None
        columns = self.table.columns
        unknown = sorted({k for r in rows for k in r if k not in columns})
        if unknown:
            raise ValueError(f"{self.table.name} has no column {', '.join(unknown)}")
        return False

    def tuples(self, rows: Sequence[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
        pairs = tuple(zip(self.names, self.defaults, strict=True))
        return [tuple(r.get(n, d) for n, d in pairs) for r in rows]

    def columns(self, rows: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
        """The rows as one list per column (the arrays ``unnest`` takes)."""
        return [[r.get(n, d) for r in rows] for n, d in zip(self.names, self.defaults, strict=True)]


_PLAIN: dict[tuple[Table, str, str], _PlainInsert] = {}

# Column types an array parameter can carry as they are (PostgreSQL ``unnest``).
_ARRAY_TYPE = re.compile(
    r"^(BIGINT|INTEGER|SMALLINT|TEXT|VARCHAR(\(\d+\))?|BOOLEAN|BYTEA|FLOAT|DOUBLE PRECISION)$"
)


_COLLATE = re.compile(r' COLLATE "[^"]+"$')


def _plain(table: Table, dialect: Dialect, kind: str) -> _PlainInsert:
    """The statement for ``kind`` ("copy", "values", "values_ignore", "unnest_ignore") over every
    column that has no server-side default, generated key or computed default."""
    key = (table, dialect.name, kind)
    found = _PLAIN.get(key)
    if found is not None:
        return found
    auto = table.autoincrement_column
    columns = [
        c
        for c in table.columns
        if c is not auto
        and c.server_default is None
        and (c.default is None or isinstance(c.default, ScalarElementColumnDefault))
    ]
    names = tuple(c.name for c in columns)
    defaults = tuple(
        c.default.arg if isinstance(c.default, ScalarElementColumnDefault) else None for c in columns
    )
    quote = dialect.identifier_preparer.quote
    target = f"{dialect.identifier_preparer.format_table(table)} ({', '.join(quote(n) for n in names)})"
    sql: str | None
    if kind == "copy":
        sql = f"COPY {target} FROM STDIN"
    elif kind in ("values", "values_ignore"):
        sql = f"INSERT INTO {target} VALUES ({', '.join('?' for _ in names)})"
        sql += " ON CONFLICT DO NOTHING" if kind == "values_ignore" else ""
    else:  # "unnest_ignore"
        # A column's collation is the table's business: the array parameter is of the bare type.
        types = [_COLLATE.sub("", c.type.dialect_impl(dialect).compile(dialect=dialect)) for c in columns]
        sql = (
            f"INSERT INTO {target} SELECT * FROM unnest({', '.join(f'%s::{t}[]' for t in types)})"
            + " ON CONFLICT DO NOTHING"
            if all(_ARRAY_TYPE.match(t) for t in types)
            else None
        )
    found = _PLAIN[key] = _PlainInsert(names, frozenset(names), defaults, sql, table)
    return found


def insert_rows(conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert rows of plain values (str, int, float, bool, bytes, None): see :func:`insert_tables`."""
    insert_tables(conn, [(table, rows)])


def insert_tables(conn: Connection, batches: Sequence[tuple[Table, Sequence[Mapping[str, Any]]]]) -> None:
    """Insert rows of plain values (str, int, float, bool, bytes, None) into several tables.

    SQLAlchemy's executemany sends one prepared statement per row through psycopg, which for
    the dozens of search-index rows of a single create cost several times the rows' own insert.
    Here: ``COPY`` per table on PostgreSQL (measured against one ``INSERT … SELECT FROM unnest``
    per table, all sent in one pipeline: COPY took a third less CPU and time even for a single
    create's forty rows), the driver's own executemany on SQLite. A row with a key that
    is a column SQLAlchemy must fill (a server default) goes through SQLAlchemy; a key that is
    no column at all is refused.
    """
    batches = [(t, r) for t, r in batches if r]
    if not batches:
        return
    name = conn.dialect.name
    raw = conn.connection.driver_connection
    fast: list[tuple[_PlainInsert, Sequence[Mapping[str, Any]]]] = []
    if name in ("postgresql", "sqlite") and raw is not None:
        kind = "values" if name == "sqlite" else "copy"
        for table, rows in batches:
            plain = _plain(table, conn.dialect, kind)
            if plain.fills(rows):
                fast.append((plain, rows))
            else:
                conn.execute(insert(table), list(rows))
    else:
        for table, rows in batches:
            conn.execute(insert(table), list(rows))
    if not fast:
        return
    assert raw is not None
    with driver_errors(conn, "; ".join(str(p.sql) for p, _ in fast)):
        if kind == "values":
            for plain, rows in fast:
                raw.executemany(plain.sql, plain.tuples(rows))
        else:
            for plain, rows in fast:
                with raw.cursor() as cur, cur.copy(str(plain.sql)) as copy:
                    for v in plain.tuples(rows):
                        copy.write_row(v)


@contextmanager
def driver_errors(conn: Connection, sql: str, params: Any = None) -> Iterator[None]:
    """The driver's errors as SQLAlchemy raises them (``IntegrityError``, ``OperationalError``…),
    for statements run on the driver connection: the unit of work's retry of transient failures
    and the error table then see one kind of exception whatever the path."""
    dialect = conn.dialect
    dbapi = dialect.loaded_dbapi
    try:
        yield
    except dbapi.Error as exc:
        raise DBAPIError.instance(sql, params, exc, dbapi.Error, dialect=dialect) from exc


_DELETE_SQL: dict[tuple[tuple[Table, ...], str, str], list[str]] = {}


def delete_matching(conn: Connection, tables: Sequence[Table], column: str, value: Any) -> None:
    """``DELETE FROM t WHERE column = value`` for each of ``tables``.

    One statement on PostgreSQL (data-modifying ``WITH`` clauses: an update that replaces a
    resource's rows in the nine search-index tables waits for one round trip, not nine), the
    driver's own statements on SQLite (no round trip to save there, only SQLAlchemy's work).
    """
    tables = tuple(tables)
    raw = conn.connection.driver_connection
    key = (tables, conn.dialect.name, column)
    statements = _DELETE_SQL.get(key)
    if statements is None:
        fmt, quote = conn.dialect.identifier_preparer.format_table, conn.dialect.identifier_preparer.quote
        if conn.dialect.name == "postgresql":
            ctes = ", ".join(
                f"d{i} AS (DELETE FROM {fmt(t)} WHERE {quote(column)} = %(v)s)" for i, t in enumerate(tables)
            )
            statements = [f"WITH {ctes} SELECT 1"]
        else:
            statements = [f"DELETE FROM {fmt(t)} WHERE {quote(column)} = ?" for t in tables]
        _DELETE_SQL[key] = statements
    if raw is None or conn.dialect.name not in ("postgresql", "sqlite"):
        for t in tables:
            conn.execute(delete(t).where(t.c[column] == value))
        return
    with driver_errors(conn, "; ".join(statements)):
        if conn.dialect.name == "postgresql":
            with raw.cursor() as cur:
                cur.execute(statements[0], {"v": value})
        else:
            for sql in statements:
                raw.execute(sql, (value,))


def insert_ignore(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert rows, silently skipping those whose primary key already exists.

    On PostgreSQL one statement over ``unnest`` of a column array each (not a statement per row)
    where the columns' types allow it; on SQLite the driver's executemany.
    """
    if not rows:
        return
    pg = conn.dialect.name == "postgresql"
    plain = _plain(table, conn.dialect, "unnest_ignore" if pg else "values_ignore")
    raw = conn.connection.driver_connection
    if raw is not None and plain.fills(rows):
        with driver_errors(conn, str(plain.sql)):
            if pg:
                with raw.cursor() as cur:
                    cur.execute(str(plain.sql), plain.columns(rows))
            else:
                raw.executemany(plain.sql, plain.tuples(rows))
        return
    dialect = postgresql if pg else sqlite
    conn.execute(dialect.insert(table).on_conflict_do_nothing(), list(rows))


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
