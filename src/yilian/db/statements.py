"""Hot-path SQL (the ledger's first): written with SQLAlchemy Core, compiled once per dialect, run
on the unit of work's own driver connection.

Why: a card charge is a dozen small statements, and through ``Connection.execute`` each one costs
building the statement, its cache key and SQLAlchemy's result machinery — more CPU than the
driver and the database together (measured on PostgreSQL: 0.20 ms a statement built and run
through Core, 0.07 ms the same statement on the driver), and the API's charge rate is bound by
the server's CPU. The SQL stays portable: it is written with Core, and each dialect renders its
own ``FOR UPDATE`` (nothing on SQLite, whose writer holds the database), ``ON CONFLICT``,
placeholders and casts. It runs on the DBAPI connection under the caller's
``Connection`` — the same transaction, so commit, rollback and savepoints are unchanged — and a
driver error is re-raised as SQLAlchemy's (``IntegrityError``, ``OperationalError``…), as the
callers and the unit of work's retry rules expect. On PostgreSQL psycopg prepares a statement
on the server after a few executions, so the repeated ones are not even parsed again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Table, bindparam, insert
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement

from yilian.db.dialect import driver_errors


class Statement:
    """One statement: ``build(dialect_name)`` returns its Core form, with ``bindparam`` names for
    every value; :meth:`run` executes it with a mapping of those names."""

    __slots__ = ("_build", "_compiled", "_lock")

    def __init__(self, build: Callable[[str], ClauseElement]) -> None:
        self._build = build
        self._compiled: dict[str, tuple[str, tuple[str, ...] | None, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def compiled(self, dialect: Dialect) -> tuple[str, tuple[str, ...] | None, dict[str, Any]]:
        """(SQL text, the parameter names in order for a positional driver or None, and the values
        the statement itself carries — a ``limit(1)``, a literal in a ``where`` — by name)."""
        found = self._compiled.get(dialect.name)
        if found is None:
            with self._lock:
                compiled = self._build(dialect.name).compile(dialect=dialect)
                assert isinstance(compiled, SQLCompiler)
                names = tuple(compiled.positiontup or ()) if compiled.positional else None
                own = {
                    name: compiled.params[name]
                    for name, bind in compiled.binds.items()
                    if not bind.required and name in compiled.params
                }
                found = self._compiled[dialect.name] = (compiled.string, names, own)
        return found

    def run(self, conn: Connection, params: Mapping[str, Any]) -> Any:
        """Execute in ``conn``'s transaction; the driver's cursor (rows, ``rowcount``)."""
        dialect = conn.dialect
        sql, names, own = self.compiled(dialect)
        if own:
            params = {**own, **params}
        args: Any = params if names is None else tuple(params[n] for n in names)
        driver = conn.connection.dbapi_connection
        assert driver is not None
        with driver_errors(conn, sql, args):
            return driver.execute(sql, args)

    def run_many(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Execute once for each of ``rows`` (the driver's executemany), in ``conn``'s transaction."""
        if not rows:
            return
        sql, names, own = self.compiled(conn.dialect)
        if own:
            rows = [{**own, **row} for row in rows]
        args: list[Any] = list(rows) if names is None else [tuple(row[n] for n in names) for row in rows]
        driver = conn.connection.dbapi_connection
        assert driver is not None
        cursor = driver.cursor()
        try:
            with driver_errors(conn, sql):
                cursor.executemany(sql, args)
        finally:
            cursor.close()

    def rows(self, conn: Connection, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The rows as dictionaries keyed by column name."""
        cursor = self.run(conn, params)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def one_or_none(self, conn: Connection, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        row = self.run(conn, params).fetchone()
        return None if row is None else tuple(row)

    def all(self, conn: Connection, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.run(conn, params).fetchall()]


class Family:
    """A multi-row ``INSERT`` in one statement, whatever the number of rows: ``build(dialect, n)``
    returns the statement for ``n`` rows, whose per-row values are named ``<name>_<i>``; each
    size is compiled on first use (rows are sent :data:`MAX_ROWS` at a time, so only a few
    sizes ever exist)."""

    MAX_ROWS = 16

    __slots__ = ("_build", "_sizes")

    def __init__(self, build: Callable[[str, int], ClauseElement]) -> None:
        self._build = build
        self._sizes: dict[int, Statement] = {}

    def _sized(self, n: int) -> Statement:
        found = self._sizes.get(n)
        if found is None:
            found = self._sizes.setdefault(n, Statement(lambda dialect: self._build(dialect, n)))
        return found

    def run(self, conn: Connection, shared: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert ``rows``; ``shared`` holds the values every row has in common."""
        for start in range(0, len(rows), self.MAX_ROWS):
            chunk = rows[start : start + self.MAX_ROWS]
            params = dict(shared)
            for i, row in enumerate(chunk):
                for name, value in row.items():
                    params[f"{name}_{i}"] = value
            self._sized(len(chunk)).run(conn, params)


def insert_row(table: Table) -> Statement:
    """``INSERT`` of one row of ``table``, every column (but a generated key) a parameter named as
    the column."""
    return Statement(
        lambda _: insert(table).values(
            {c.name: bindparam(c.name, type_=c.type) for c in table.columns if c.autoincrement is not True}
        )
    )
