"""Opening a database: URL handling and the per-dialect connection settings.

SQLite runs in WAL mode with ``synchronous=FULL`` (an acknowledged commit survives a power
cut) and foreign keys on. Write transactions start with ``BEGIN IMMEDIATE`` so that two
writers never deadlock upgrading a shared lock; readers use deferred ``BEGIN`` and see a
consistent snapshot while writers work. PostgreSQL runs through psycopg 3 at READ COMMITTED;
correctness under concurrency comes from row locks and unique constraints, not isolation level.
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import InvalidatePoolError
from sqlalchemy.pool import NullPool, QueuePool

from yilian.db.dialect import enable_index_hints
from yilian.kernel.errors import Category, YilianError

DEFAULT_SQLITE_PATH = "yilian.db"
BUSY_TIMEOUT_MS = 30_000


def normalize_url(url: str) -> URL:
    """Accept the forms people type (``sqlite:///x.db``, ``postgresql://…``) and pick our drivers."""
    try:
        parsed = make_url(url)
    except Exception as exc:  # SQLAlchemy raises ArgumentError with an unhelpful text
        raise YilianError(
            Category.INVALID,
            f"not a database URL: {url!r} (expected sqlite:///path/to/file.db or postgresql://user@host/db)",
        ) from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+pysqlite")
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+psycopg")
    raise YilianError(
        Category.INVALID, f"unsupported database {backend!r}: Yilian runs on SQLite or PostgreSQL"
    )


@dataclass
class Database:
    """An open database: the engine plus what code needs to know about its dialect."""

    engine: Engine
    url: URL
    settings: dict[str, Any] = field(default_factory=dict)
    _autocommit_engine: Engine | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    def dispose(self) -> None:
        self.engine.dispose()

    def connect_autocommit(self) -> Connection:
        """A pooled connection on which each statement is its own transaction: for a read of one
        statement outside any unit of work (``with db.connect_autocommit() as conn: …``).

        A plain ``engine.connect()`` costs such a read two or three extra round trips on
        PostgreSQL: psycopg sends ``BEGIN`` before the statement and the pool a ``ROLLBACK`` when
        the connection comes back, and psycopg's rollback also forgets every statement the
        connection had prepared (``DEALLOCATE ALL``), so the next units of work on it prepare
        theirs again. SQLite's connections already run statements sent to the driver without a
        transaction of their own; the engine's ``BEGIN``, which SQLAlchemy asks for before its
        first statement, is left out here (see ``_on_begin``).
        """
        engine = self._autocommit_engine
        if engine is None:
            # The same pool, its connections given these options as they are handed out (made
            # once: copied onto each connection, they cost a SQLite read a fifth of its client time).
            engine = self._autocommit_engine = self.engine.execution_options(
                # Not SQLAlchemy's AUTOCOMMIT on SQLite: there it resets the driver's own mode
                # when the connection goes back to the pool.
                **({"yilian_autocommit": True} if self.is_sqlite else {"isolation_level": "AUTOCOMMIT"})
            )
        return engine.connect()

    def describe(self) -> str:
        """The URL with any password hidden, for logs and the console (not for open pages)."""
        return self.url.render_as_string(hide_password=True)


def _sqlite_engine(url: URL, pool_size: int) -> Engine:
    database = url.database or DEFAULT_SQLITE_PATH
    memory = database in ("", ":memory:")
    if not memory:
        Path(database).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        poolclass=NullPool if memory else QueuePool,
        **({} if memory else {"pool_size": pool_size, "max_overflow": pool_size * 2, "pool_timeout": 60}),
        connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        # Take transaction control from the driver: we emit BEGIN ourselves (see _on_begin).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA temp_store=MEMORY")
        cur.execute("PRAGMA cache_size=-65536")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        options = conn.get_execution_options()
        if options.get("yilian_autocommit", False):
            return  # Database.connect_autocommit: every statement its own transaction
        conn.exec_driver_sql("BEGIN IMMEDIATE" if options.get("yilian_write", False) else "BEGIN")

    enable_index_hints(engine)
    return engine


# A pooled connection idle this long is pinged before it is handed out again.
PING_AFTER_IDLE_S = 1.0


def _postgres_engine(url: URL, pool_size: int) -> Engine:
    engine = create_engine(url, pool_size=pool_size, max_overflow=pool_size * 2, pool_timeout=60)
    _ping_after_idle(engine, PING_AFTER_IDLE_S)
    return engine


def _ping_after_idle(engine: Engine, idle_s: float) -> None:
    """Check a pooled connection before reuse only when it has been idle ``idle_s`` or more.

    Why not ``pool_pre_ping``: that is a round trip on every checkout, one in every request (a
    card charge is otherwise a dozen). A connection lost while idle in the pool (the database
    restarted, a firewall dropped it) is found here and replaced before anyone uses it; one
    back in use within ``idle_s`` is taken as alive. A failed ping invalidates every pooled
    connection made before it, as ``pool_pre_ping`` does: when the database restarts they are
    lost together, those just back in the pool included. A connection lost in use fails its
    request as it would with a pre-ping (``UNAVAILABLE``).
    """

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checking_out(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.pop("idle_since", None)
        if since is None or time.monotonic() - since < idle_s:
            return
        try:
            alive = engine.dialect.do_ping(dbapi_conn)
        except engine.dialect.loaded_dbapi.Error:
            alive = False  # e.g. the server ended the session: not one to hand out either way
        if not alive:
            # The pool discards this connection and every older one, and connects afresh.
            raise InvalidatePoolError("pooled connection lost while idle")


def open_database(url: str | None = None, *, pool_size: int | None = None, **settings: Any) -> Database:
    """Open the database at ``url`` (default: ``$YILIAN_DATABASE_URL``, else ``sqlite:///yilian.db``)."""
    raw = url or os.environ.get("YILIAN_DATABASE_URL") or f"sqlite:///{DEFAULT_SQLITE_PATH}"
    parsed = normalize_url(raw)
    size = pool_size or int(os.environ.get("YILIAN_DB_POOL_SIZE", "8"))
    engine = (
        _sqlite_engine(parsed, size)
        if parsed.get_backend_name() == "sqlite"
        else _postgres_engine(parsed, size)
    )
    return Database(engine=engine, url=parsed, settings=dict(settings))
