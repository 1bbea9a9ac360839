"""Group commit for read accesses: many requests' audit rows, one transaction.

A read changes nothing, so it has no transaction of its own to carry its audit row; giving each
read one would cost a commit (an fsync) per request. Instead requests hand their row to the
:class:`AuditWriter` and wait: one background thread takes everything queued (up to
``max_batch`` rows), inserts it in one transaction, commits, and only then resolves each
caller's wait with its row id — a read is never answered unaudited. While a commit is in
flight the next batch queues up, so the batch size follows the load by itself.

Failures: a batch that fails is retried with exponential backoff; a caller whose row could not
be written before its deadline gets :class:`YilianError` (``UNAVAILABLE``) and must not answer.
A row the database rejects outright (integrity or data error) fails only its own caller. When a
commit fails, its outcome is unknown: before writing those rows again the writer looks for them,
so no row is written twice.

On SQLite the writer is one more writer taking the database's single write lock (its INSERT
takes it), so never wait on it while holding a write transaction of your own.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from sqlalchemy import Connection, select
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError

from yilian.db import Database, UnitOfWork
from yilian.kernel.errors import Category, YilianError
from yilian.security.audit.model import AuditRecord
from yilian.security.audit.recorder import insert_rows, to_row
from yilian.security.audit.tables import audit_event

log = logging.getLogger("yilian.security.audit")
# The writer fails a row at its deadline; a caller waits this much longer before concluding the
# writer itself is stuck (a database call that never returns).
_STUCK_S = 5.0


def _stuck() -> YilianError:
    return YilianError(Category.UNAVAILABLE, "the audit writer did not answer in time")


def _brief(exc: BaseException) -> str:
    """The driver's first line: SQLAlchemy's own text lists the parameters — the audit rows,
    with patient ids and queries — which belong in neither a log nor an answer."""
    cause = exc.orig if isinstance(exc, DBAPIError) else exc
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[0][:200]}" if lines else type(cause).__name__


class _Waiter:
    """How a caller learns its row's fate: told once, from the writer's thread."""

    def settle(self, result: int, error: BaseException | None) -> None:
        raise NotImplementedError


class _FutureWaiter(_Waiter):
    """For :meth:`AuditWriter.submit`: a ``concurrent.futures.Future``."""

    def __init__(self) -> None:
        self.future: Future[int] = Future()

    def settle(self, result: int, error: BaseException | None) -> None:
        try:
            if error is not None:
                self.future.set_exception(error)
            else:
                self.future.set_result(result)
        except InvalidStateError:
            pass  # the caller cancelled its wait; the row is written all the same


class _ThreadWaiter(_Waiter):
    """For :meth:`AuditWriter.record_sync`: one lock, held until settled. Cheaper than a Future's
    condition variable, and this is paid on every audited request."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.lock.acquire()
        self.result = -1
        self.error: BaseException | None = None

    def settle(self, result: int, error: BaseException | None) -> None:
        self.result, self.error = result, error
        self.lock.release()

    def wait(self, timeout: float) -> int:
        if not self.lock.acquire(timeout=timeout):
            raise _stuck()
        if self.error is not None:
            raise self.error
        return self.result


class _LoopWaiter(_Waiter):
    """For :meth:`AuditWriter.record`: an asyncio future, set on its own loop's thread."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.future: asyncio.Future[int] = self.loop.create_future()

    def settle(self, result: int, error: BaseException | None) -> None:
        try:
            self.loop.call_soon_threadsafe(self.set_now, result, error)
        except RuntimeError:
            pass  # the loop has closed: nobody is waiting any more

    def set_now(self, result: int, error: BaseException | None) -> None:
        """On the loop's own thread."""
        if self.future.done():
            return  # the caller stopped waiting (cancelled, or timed out)
        if error is not None:
            self.future.set_exception(error)
        else:
            self.future.set_result(result)


@dataclass(eq=False)
class _Item:
    row: dict[str, Any]
    waiter: _Waiter
    deadline: float  # time.monotonic()
    unsure: bool = False  # a commit of unknown outcome may have written it
    done: bool = False


def _resolve(item: _Item, result: int | None = None, error: BaseException | None = None) -> None:
    item.done = True
    item.waiter.settle(result if result is not None else -1, error)


def _resolve_all(items: list[_Item], ids: list[int]) -> None:
    """Each item with its row id. The coroutines waiting on one event loop are woken by one
    callback on that loop rather than one each: every ``call_soon_threadsafe`` writes to the
    loop's wake-up pipe, a system call on this thread that the whole batch waits for (16
    coroutines awaiting rows: 30 → 23 µs of CPU a row)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_LoopWaiter, int]]] = {}
    for item, row_id in zip(items, ids, strict=True):
        item.done = True
        waiter = item.waiter
        if isinstance(waiter, _LoopWaiter):
            by_loop.setdefault(waiter.loop, []).append((waiter, row_id))
        else:
            waiter.settle(row_id, None)
    for loop, waiting in by_loop.items():
        try:
            loop.call_soon_threadsafe(_set_many, waiting)
        except RuntimeError:
            pass  # the loop has closed: nobody is waiting any more


def _set_many(waiting: list[tuple[_LoopWaiter, int]]) -> None:
    for waiter, row_id in waiting:
        waiter.set_now(row_id, None)


class AuditWriter:
    """``await writer.record(r)`` / ``writer.record_sync(r)``: returns the row id once committed."""

    def __init__(
        self,
        db: Database,
        *,
        max_batch: int = 500,
        linger: float = 0.0,
        timeout: float = 10.0,
        backoff: tuple[float, float] = (0.01, 1.0),
        name: str = "audit-writer",
    ) -> None:
        self.db = db
        self.max_batch = max_batch
        self.linger = linger  # extra wait for more rows before committing (0: commit what is queued)
        self.timeout = timeout
        self._backoff = backoff
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self._last_error: BaseException | None = None
        self.batches = 0  # committed transactions, for benchmarks and tests
        self._conn: Connection | None = None  # PostgreSQL: the writer's own autocommit connection
        self._committing = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # -- callers ---------------------------------------------------------------------------------

    def submit(self, record: AuditRecord, *, timeout: float | None = None) -> Future[int]:
        """Queue ``record``; the future resolves with its id after commit, or fails after ``timeout``."""
        waiter = _FutureWaiter()
        self._enqueue(record, waiter, timeout)
        return waiter.future

    def record_sync(self, record: AuditRecord, *, timeout: float | None = None) -> int:
        waiter = _ThreadWaiter()
        self._enqueue(record, waiter, timeout)
        return waiter.wait((self.timeout if timeout is None else timeout) + _STUCK_S)

    async def record(self, record: AuditRecord, *, timeout: float | None = None) -> int:
        waiter = _LoopWaiter()
        self._enqueue(record, waiter, timeout)
        try:
            async with asyncio.timeout((self.timeout if timeout is None else timeout) + _STUCK_S):
                return await waiter.future
        except TimeoutError:
            raise _stuck() from None

    def _enqueue(self, record: AuditRecord, waiter: _Waiter, timeout: float | None) -> None:
        row = to_row(record)  # a malformed record fails in the caller
        item = _Item(row, waiter, time.monotonic() + (self.timeout if timeout is None else timeout))
        with self._lock:
            if self._closed:
                raise YilianError(Category.UNAVAILABLE, "the audit writer is closed")
            self._queue.put(item)

    def close(self, timeout: float | None = None) -> None:
        """Write everything queued (retrying until each row's deadline), then stop the thread."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._queue.put(None)
        self._thread.join(timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- the writer thread -------------------------------------------------------------------------

    def _run(self) -> None:
        pending: list[_Item] = []
        closing = False
        delay = self._backoff[0]
        while True:
            closing = self._collect(pending, closing)
            if not pending:
                if closing:
                    self._drop_connection()
                    return
                continue
            try:
                pending = self._write(pending)
            except Exception as exc:  # a bug here must not kill the thread and strand every caller
                log.error(
                    "audit writer: unexpected failure: %s",
                    _brief(exc),
                    exc_info=not isinstance(exc, DBAPIError),
                )
                self._last_error = exc
            pending = self._expire(pending)
            if pending:
                time.sleep(delay)
                delay = min(delay * 2, self._backoff[1])
            else:
                delay = self._backoff[0]

    def _collect(self, batch: list[_Item], closing: bool) -> bool:
        """Add queued rows to ``batch`` (blocking for the first when it is empty); True once closing."""
        if not batch and not closing:
            item = self._queue.get()
            if item is None:
                return True
            batch.append(item)
        until = time.monotonic() + self.linger
        while len(batch) < self.max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                left = until - time.monotonic()
                if closing or left <= 0:
                    break
                try:
                    item = self._queue.get(timeout=left)
                except queue.Empty:
                    break
            if item is None:
                closing = True
            else:
                batch.append(item)
        return closing

    def _expire(self, items: list[_Item]) -> list[_Item]:
        now = time.monotonic()
        keep = []
        for item in items:
            if item.done:
                continue
            if now >= item.deadline:
                reason = f" ({_brief(self._last_error)})" if self._last_error else ""
                _resolve(
                    item, error=YilianError(Category.UNAVAILABLE, f"the audit log cannot be written{reason}")
                )
            else:
                keep.append(item)
        return keep

    def _write(self, items: list[_Item]) -> list[_Item]:
        """Write ``items``; returns those to try again."""
        unsure = [i for i in items if i.unsure]
        if unsure:
            try:
                self._settle(unsure)
            except Exception as exc:
                self._last_error = exc
                return items
            items = [i for i in items if not i.done]
        if not items:
            return []
        self._committing = False
        ids: list[int] = []
        try:
            ids = self._commit([i.row for i in items])
        except (IntegrityError, DataError) as exc:
            # The database refused a row: the statement failed, nothing was committed.
            if len(items) > 1:
                # One bad row must not hold the others back: write them one by one.
                return [again for i in items for again in self._write([i])]
            log.error("audit writer: row refused by the database: %s", _brief(exc))
            _resolve(
                items[0], error=YilianError(Category.INTERNAL, f"the audit row was refused ({_brief(exc)})")
            )
            return []
        except Exception as exc:
            self._drop_connection()
            if self._committing:
                self._mark_unsure(items, exc)
            else:
                self._last_error = exc
                log.warning("audit writer: batch of %d failed, will retry: %s", len(items), _brief(exc))
            return items
        self.batches += 1
        self._last_error = None
        _resolve_all(items, ids)
        return []

    def _commit(self, rows: list[dict[str, Any]]) -> list[int]:
        """Insert ``rows`` in one transaction and commit it; their ids.

        One multi-row INSERT on the writer's own connection in autocommit mode is an atomic,
        durable transaction of its own on both databases (SQLite commits it when the statement
        finishes, with the ids read back), and it is the fewest calls into the driver. That
        count is what matters here: each call releases the GIL, and under load taking it back
        costs this thread a wait behind the request threads (up to the interpreter's switch
        interval, 5 ms), while every audited request waits for this thread. Measured on
        PostgreSQL: a batch took 22 ms with BEGIN/INSERT/COMMIT through the pool, 15 ms like
        this, at 16 busy threads; on SQLite a unit of work (BEGIN IMMEDIATE, INSERT, COMMIT)
        cost a compartment search's audit about twice what this does. On PostgreSQL the
        statement goes to libpq in one call (``db/libpq``, decision 0020): psycopg's cursor
        gives the GIL up and takes it back at every step of the protocol. The outcome is
        unknown only if the connection fails while the statement runs.
        """
        if self._conn is None:
            self._conn = self.db.connect_autocommit()  # held until it fails or the writer closes
        self._committing = True
        return insert_rows(self._conn, rows)

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.invalidate()
                conn.close()
            except Exception:
                log.debug("audit writer: closing a broken connection failed", exc_info=True)

    def _mark_unsure(self, items: list[_Item], exc: BaseException) -> None:
        self._last_error = exc
        log.warning(
            "audit writer: commit of %d rows failed, checking before retrying: %s", len(items), _brief(exc)
        )
        for item in items:
            item.unsure = True

    def _settle(self, items: list[_Item]) -> None:
        """Resolve the items whose uncertain commit did happen; the rest are written again.

        A row is found by its content: it holds the event's time to the microsecond, its agent
        and what was accessed, so only the row itself has the same bytes (identical events in
        the same microsecond are counted, not merged).
        """
        recorded = sorted({i.row["recorded"] for i in items})
        with UnitOfWork(self.db) as uow:
            found = uow.conn.execute(
                select(audit_event.c.id, audit_event.c.content).where(audit_event.c.recorded.in_(recorded))
            ).all()
        stored: dict[bytes, list[int]] = {}
        for row_id, content in found:
            stored.setdefault(bytes(content), []).append(int(row_id))
        for item in items:
            ids = stored.get(item.row["content"])
            if ids:
                _resolve(item, ids.pop(0))
            item.unsure = False
