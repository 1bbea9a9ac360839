"""The unit of work: one database transaction around one use case, and the only place that commits.

Use cases take a :class:`UnitOfWork` first and never commit themselves; the entry point (an
HTTP handler, a CLI command, a test) opens it, so several use cases can share one transaction
and a test can roll everything back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any, Self, TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError, OperationalError

from yilian.db.engine import Database
from yilian.db.statements import Batch
from yilian.kernel.errors import Category, YilianError

T = TypeVar("T")


class UnitOfWork:
    """A transaction on one connection. ``with UnitOfWork(db, write=True) as uow: ...`` commits on success."""

    def __init__(self, db: Database, *, write: bool = False, connection: Connection | None = None) -> None:
        self.db = db
        self.write = write
        self._external = connection is not None
        self._conn: Connection | None = connection
        self._committed = False
        # Work to run just before the commit (flushing buffered writes), and after a successful
        # commit (notifications, cache invalidation).
        self.before_commit: list[Callable[[], None]] = []
        self.after_commit: list[Callable[[], None]] = []
        # Per-transaction scratch space for use cases that cooperate (e.g. deferred reference checks).
        self.state: dict[str, Any] = {}
        self._at_commit: Batch | None = None

    @property
    def at_commit(self) -> Batch:
        """Writes nobody reads back before the commit, sent together just before it (after the
        ``before_commit`` hooks, which may add to it): one round trip on PostgreSQL."""
        if self._at_commit is None:
            self._at_commit = Batch(self.conn)
        return self._at_commit

    @property
    def conn(self) -> Connection:
        if self._conn is None:
            raise RuntimeError("unit of work is not open")
        return self._conn

    @property
    def dialect(self) -> str:
        return self.db.dialect

    def __enter__(self) -> Self:
        if self._conn is None:
            try:
                conn = self.db.engine.connect()
                if self.write:
                    conn = conn.execution_options(yilian_write=True)
                conn.begin()
            except OperationalError as exc:
                raise YilianError(Category.UNAVAILABLE, f"database unavailable: {exc.orig}") from exc
            self._conn = conn
        return self

    def commit(self) -> None:
        hooks, self.before_commit = self.before_commit, []
        for hook in hooks:
            hook()
        if self._at_commit is not None:
            self._at_commit.send()
        if self._external:
            self._committed = True
            return
        self.conn.commit()
        self._committed = True
        callbacks, self.after_commit = self.after_commit, []
        for cb in callbacks:
            cb()

    def rollback(self) -> None:
        if not self._external and self._conn is not None:
            self._conn.rollback()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._external:
            return
        try:
            if exc_type is None and not self._committed:
                self.commit()
            elif exc_type is not None:
                self.rollback()
        finally:
            assert self._conn is not None
            self._conn.close()
            self._conn = None


def is_transient(exc: BaseException) -> bool:
    """Errors that a retry of the whole transaction can cure: deadlocks, serialization, busy SQLite."""
    if isinstance(exc, DBAPIError):
        orig = exc.orig
        sqlstate = getattr(orig, "sqlstate", None)
        if sqlstate in ("40001", "40P01", "55P03"):
            return True
        text = str(orig).lower()
        return "database is locked" in text or "database is busy" in text
    return False


def transact(db: Database, fn: Callable[[UnitOfWork], T], *, write: bool = True, attempts: int = 5) -> T:
    """Run ``fn`` in a fresh unit of work, committing on success and retrying transient failures."""
    delay = 0.01
    for attempt in range(attempts):
        try:
            with UnitOfWork(db, write=write) as uow:
                return fn(uow)
        except DBAPIError as exc:
            if attempt + 1 < attempts and is_transient(exc):
                time.sleep(delay)
                delay *= 2
                continue
            if isinstance(exc, OperationalError):
                raise YilianError(Category.UNAVAILABLE, f"database unavailable: {exc.orig}") from exc
            raise
    raise AssertionError("unreachable")


@contextmanager
def read(db: Database) -> Iterator[UnitOfWork]:
    with UnitOfWork(db, write=False) as uow:
        yield uow
