"""Bulk jobs as stored: create, find, claim, heartbeat, finish, cancel, expire.

Every change is a small statement of its own on the job row; the worker never holds a
transaction open while it writes files, so a job's status can be polled (and cancelled) at any
moment. A claim is a compare-and-set on the row, so two server processes never run one job.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Connection, delete, insert, or_, select, update

from yilian.db import Database, UnitOfWork
from yilian.exchange.bulk.tables import bulk_job
from yilian.fhir.search.values import instant_to_us
from yilian.kernel import clock

ACCEPTED, RUNNING, COMPLETED, FAILED, CANCELLED = "accepted", "running", "completed", "failed", "cancelled"
UNFINISHED = (ACCEPTED, RUNNING)


def now_us() -> int:
    return instant_to_us(clock.now())


@dataclass(frozen=True)
class Job:
    job_id: str
    kind: str
    state: str
    owner: str
    caller: dict[str, Any]
    request: str
    params: dict[str, Any]
    transaction_time: int
    created: int
    updated: int
    expires: int | None
    processed: int
    total: int | None
    output: list[dict[str, Any]]
    errors: list[dict[str, Any]]
    message: str | None


def _job(row: Any) -> Job:
    return Job(
        row.job_id,
        row.kind,
        row.state,
        row.owner,
        orjson.loads(row.caller),
        row.request,
        orjson.loads(row.params),
        row.transaction_time,
        row.created,
        row.updated,
        row.expires,
        row.processed or 0,
        row.total,
        orjson.loads(row.output or "[]"),
        orjson.loads(row.errors or "[]"),
        row.message,
    )


def create_job(
    uow: UnitOfWork,
    *,
    kind: str,
    owner: str,
    caller: dict[str, Any],
    request: str,
    params: dict[str, Any],
    job_id: str | None = None,
) -> Job:
    now = now_us()
    job_id = job_id or str(uuid.uuid4())
    uow.conn.execute(
        insert(bulk_job),
        {
            "job_id": job_id,
            "kind": kind,
            "state": ACCEPTED,
            "owner": owner,
            "caller": orjson.dumps(caller).decode(),
            "request": request,
            "params": orjson.dumps(params).decode(),
            "transaction_time": now,
            "created": now,
            "updated": now,
            "processed": 0,
            "output": "[]",
            "errors": "[]",
        },
    )
    found = get_job(uow.conn, job_id)
    assert found is not None
    return found


def get_job(conn: Connection, job_id: str) -> Job | None:
    row = conn.execute(select(bulk_job).where(bulk_job.c.job_id == job_id)).first()
    return _job(row) if row is not None else None


def load_job(db: Database, job_id: str) -> Job | None:
    with db.connect_autocommit() as conn:  # a status poll: one statement, no transaction
        return get_job(conn, job_id)


def claim_next(db: Database, worker: str, *, stale_after_us: int) -> Job | None:
    """Take the oldest job waiting, or one whose worker stopped heart-beating (a restart)."""
    now = now_us()
    waiting = or_(
        bulk_job.c.state == ACCEPTED,
        (bulk_job.c.state == RUNNING) & (bulk_job.c.updated < now - stale_after_us),
    )
    with db.engine.begin() as conn:
        candidates = conn.execute(
            select(bulk_job.c.job_id, bulk_job.c.updated).where(waiting).order_by(bulk_job.c.created).limit(5)
        ).all()
    for job_id, seen in candidates:
        with db.engine.begin() as conn:
            taken = conn.execute(
                update(bulk_job)
                .where(bulk_job.c.job_id == job_id, bulk_job.c.updated == seen, waiting)
                .values(state=RUNNING, worker=worker, updated=now, processed=0)
            ).rowcount
        if taken == 1:
            return load_job(db, job_id)
    return None


def heartbeat(db: Database, job_id: str, worker: str, *, processed: int, total: int | None = None) -> bool:
    """Record progress; False when the job is no longer this worker's to run (cancelled)."""
    values: dict[str, Any] = {"updated": now_us(), "processed": processed}
    if total is not None:
        values["total"] = total
    with db.engine.begin() as conn:
        return (
            conn.execute(
                update(bulk_job)
                .where(bulk_job.c.job_id == job_id, bulk_job.c.worker == worker, bulk_job.c.state == RUNNING)
                .values(**values)
            ).rowcount
            == 1
        )


def complete(
    db: Database,
    job_id: str,
    worker: str,
    *,
    output: list[dict[str, Any]],
    errors: list[dict[str, Any]],
    processed: int,
    expires: int,
) -> bool:
    with db.engine.begin() as conn:
        return (
            conn.execute(
                update(bulk_job)
                .where(bulk_job.c.job_id == job_id, bulk_job.c.worker == worker, bulk_job.c.state == RUNNING)
                .values(
                    state=COMPLETED,
                    updated=now_us(),
                    processed=processed,
                    output=orjson.dumps(output).decode(),
                    errors=orjson.dumps(errors).decode(),
                    expires=expires,
                )
            ).rowcount
            == 1
        )


def fail(db: Database, job_id: str, worker: str, message: str, *, expires: int) -> None:
    with db.engine.begin() as conn:
        conn.execute(
            update(bulk_job)
            .where(bulk_job.c.job_id == job_id, bulk_job.c.worker == worker, bulk_job.c.state == RUNNING)
            .values(state=FAILED, updated=now_us(), message=message[:2000], expires=expires)
        )


def cancel(uow: UnitOfWork, job_id: str) -> None:
    """The owner's DELETE: the job stops (the worker sees it at its next heartbeat) and goes."""
    uow.conn.execute(
        update(bulk_job)
        .where(bulk_job.c.job_id == job_id)
        .values(state=CANCELLED, updated=now_us(), expires=0)
    )


def due_for_removal(db: Database) -> list[str]:
    """Jobs past their expiry (finished ones after the retention time, cancelled at once)."""
    now = now_us()
    with db.connect_autocommit() as conn:
        return list(
            conn.execute(
                select(bulk_job.c.job_id).where(bulk_job.c.expires.is_not(None), bulk_job.c.expires <= now)
            ).scalars()
        )


def remove(db: Database, job_id: str) -> None:
    with db.engine.begin() as conn:
        conn.execute(delete(bulk_job).where(bulk_job.c.job_id == job_id))
