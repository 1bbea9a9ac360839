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

:class:`Batch` sends such statements together when nobody needs their results until all have
run: one round trip on PostgreSQL (decision 0017), where each would otherwise wait for its reply.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Table, bindparam, insert
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement

from yilian.db.dialect import driver_errors

_CURSOR = "yilian.db.statements.cursor"


def _cursor(conn: Connection) -> Any:
    """The driver cursor for a statement here: on PostgreSQL the one kept with ``conn``'s DBAPI
    connection, on SQLite a fresh one.

    A fresh cursor for every statement (the drivers' ``connection.execute``) costs about 10 µs of
    Python on psycopg, a sixth of a small statement's whole client-side cost, and a charge runs
    about twenty. psycopg's client-side cursor holds its whole result once it has executed, so
    one cursor can serve every statement on the connection (which serves one thread at a time;
    :class:`Batch` gives each statement it pipelines a cursor of its own). It lives in the pool's
    record of the DBAPI connection and goes with that connection when the pool closes or
    invalidates it. Not on SQLite: a statement read only in part (``one_or_none`` of several
    rows) stays unfinished on its cursor, and an unfinished statement keeps its read snapshot,
    so a kept cursor would carry an old view of the database into the connection's next
    transactions. A cursor dropped after use is reset at once.
    """
    fairy = conn.connection
    driver = fairy.dbapi_connection
    assert driver is not None
    if conn.dialect.name != "postgresql":
        return driver.cursor()
    info = fairy.info
    cursor = info.get(_CURSOR)
    if cursor is None:
        cursor = info[_CURSOR] = driver.cursor()
    return cursor


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

    def bound(self, dialect: Dialect, params: Mapping[str, Any]) -> tuple[str, Any]:
        """The SQL and the driver's arguments for ``params``."""
        sql, names, own = self.compiled(dialect)
        if own:
            params = {**own, **params}
        return sql, (params if names is None else tuple(params[n] for n in names))

    def run(self, conn: Connection, params: Mapping[str, Any]) -> Any:
        """Execute in ``conn``'s transaction; the driver's cursor (rows, ``rowcount``), which may be
        the connection's own (:func:`_cursor`): read it before running the next statement."""
        sql, args = self.bound(conn.dialect, params)
        cursor = _cursor(conn)
        with driver_errors(conn, sql, args):
            cursor.execute(sql, args)
        return cursor

    def defer(self, batch: Batch, params: Mapping[str, Any]) -> Deferred:
        """Add to ``batch``: run when the batch is sent; its first row, if any, read then."""
        sql, args = self.bound(batch.conn.dialect, params)
        return batch.add_sql(sql, args)

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
        for statement, params in self._chunks(shared, rows):
            statement.run(conn, params)

    def defer(self, batch: Batch, shared: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> None:
        """Add the insert of ``rows`` to ``batch``."""
        for statement, params in self._chunks(shared, rows):
            statement.defer(batch, params)

    def _chunks(
        self, shared: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]
    ) -> Iterator[tuple[Statement, dict[str, Any]]]:
        for start in range(0, len(rows), self.MAX_ROWS):
            chunk = rows[start : start + self.MAX_ROWS]
            params = dict(shared)
            for i, row in enumerate(chunk):
                for name, value in row.items():
                    params[f"{name}_{i}"] = value
            yield self._sized(len(chunk)), params


class Deferred:
    """The first row a statement in a :class:`Batch` returned, once the batch has been sent."""

    __slots__ = ("_row", "_sent", "_sql")

    def __init__(self, sql: str) -> None:
        self._sql = sql
        self._sent = False
        self._row: tuple[Any, ...] | None = None

    def one_or_none(self) -> tuple[Any, ...] | None:
        if not self._sent:
            raise RuntimeError(f"the batch holding {self._sql[:60]!r} has not been sent")
        return self._row

    def _receive(self, cursor: Any) -> None:
        row = cursor.fetchone() if cursor.description else None
        self._row = None if row is None else tuple(row)
        self._sent = True


class Batch:
    """Statements whose results nobody needs until all of them have run, sent together.

    On PostgreSQL in one round trip (psycopg's pipeline mode: every statement goes out, then every
    reply is read), where one after the other each would wait for its reply: a charge's writes
    are five statements and a merchant account's update, and its last one the Idempotency-Key's
    reply and the audit row. A batch of two or more that is the transaction's first work carries
    psycopg's ``BEGIN`` in the same round trip; a batch of one runs as a plain statement. On
    SQLite they run one after the other: an embedded database has no round trips to save.

    Only driver-level statements (this module's, or SQL given to :meth:`add_sql`) go in a batch,
    and nothing else runs on the connection while it is sent: SQLAlchemy reads a cursor's
    description as soon as it has executed, which pipeline mode has only after the sync. An
    error in any statement is raised by :meth:`send` as SQLAlchemy's (``IntegrityError``…), and
    the caller's transaction is then rolled back as for any failed statement. The error names
    the SQL but not the parameters: batches carry audit rows and stored replies, which are not
    for logs.
    """

    __slots__ = ("_items", "conn")

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._items: list[tuple[str, Any, Deferred]] = []

    def __len__(self) -> int:
        return len(self._items)

    def add_sql(self, sql: str, args: Any) -> Deferred:
        """Add ``sql`` (in the driver's parameter style) with ``args``."""
        deferred = Deferred(sql)
        self._items.append((sql, args, deferred))
        return deferred

    def send(self) -> None:
        """Run everything added since the last send, in order."""
        items, self._items = self._items, []
        if not items:
            return
        conn = self.conn
        driver = conn.connection.dbapi_connection
        assert driver is not None
        # One statement has no round trip to share. Entering and leaving pipeline mode costs CPU:
        # even carrying a transaction's BEGIN with its first statement cost more than the round
        # trip saved (measured on the charge's key claim, decision 0017).
        plain = conn.dialect.name != "postgresql" or len(items) == 1
        if plain:
            for sql, args, deferred in items:
                with driver_errors(conn, sql):
                    deferred._receive(driver.execute(sql, args))
            return
        with driver_errors(conn, "; ".join(sql for sql, _, _ in items)):
            with driver.pipeline():  # type: ignore[attr-defined]
                cursors = [(driver.execute(sql, args), deferred) for sql, args, deferred in items]
            # Leaving the pipeline block waited for every reply (and raised the first error).
            for cursor, deferred in cursors:
                deferred._receive(cursor)


def insert_row(table: Table) -> Statement:
    """``INSERT`` of one row of ``table``, every column (but a generated key) a parameter named as
    the column."""
    return Statement(
        lambda _: insert(table).values(
            {c.name: bindparam(c.name, type_=c.type) for c in table.columns if c.autoincrement is not True}
        )
    )
