"""Use cases on the dead-letter store: list what failed, replay it after a fix."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import and_, select

from yilian.db import Database
from yilian.db.uow import read
from yilian.exchange import tables
from yilian.exchange.intake import IntakeSettings, Outcome, process
from yilian.exchange.raw_messages import open_raw
from yilian.kernel.errors import Category, YilianError


@dataclass(frozen=True)
class DeadLetter:
    dead_id: int
    inbox_id: str
    failed: int  # microseconds since the epoch
    sender: str
    control_id: str
    message_type: str
    ack_code: str
    error_code: str
    location: str
    reason: str
    attempts: int
    status: str


def dead_letters(db: Database, *, include_resolved: bool = False, limit: int = 1000) -> list[DeadLetter]:
    dl = tables.dead_letter
    query = select(dl).order_by(dl.c.dead_id).limit(limit)
    if not include_resolved:
        query = query.where(dl.c.status == "open")
    with read(db) as uow:
        rows = uow.conn.execute(query).all()
    return [
        DeadLetter(
            r.dead_id,
            r.inbox_id,
            r.failed,
            "|".join(x for x in (r.sending_application, r.sending_facility) if x),
            r.control_id or "",
            r.message_type or "",
            r.ack_code,
            r.error_code,
            r.location or "",
            r.reason,
            r.attempts,
            r.status,
        )
        for r in rows
    ]


def replay(
    db: Database,
    *,
    settings: IntakeSettings,
    ids: Sequence[int] | None = None,
    as_client: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[tuple[int, Outcome]]:
    """Process open dead letters again (all of them when ``ids`` is None), oldest first.

    Each is written as the client that sent it (a message is never replayed under someone
    else's rights); ``as_client`` names the client for messages received before the listener
    recorded one. A replay that succeeds resolves the dead letter; one that fails again stays
    open with the new reason and one more attempt counted. Each is its own transaction;
    ``progress(done, total)`` is called after each.
    """
    dl, inbox = tables.dead_letter, tables.inbox
    query = select(dl.c.dead_id, dl.c.status, inbox.c.inbox_id, inbox.c.raw, inbox.c.client_id).join(
        inbox, inbox.c.inbox_id == dl.c.inbox_id
    )
    if ids is not None:
        query = query.where(dl.c.dead_id.in_(list(ids)))
    else:
        query = query.where(dl.c.status == "open")
    with read(db) as uow:
        rows = uow.conn.execute(query.order_by(dl.c.dead_id)).all()
    if ids is not None:
        missing = set(ids) - {r.dead_id for r in rows}
        if missing:
            raise YilianError(
                Category.NOT_FOUND, f"no dead letter {', '.join(str(i) for i in sorted(missing))}"
            )
        closed = [r.dead_id for r in rows if r.status != "open"]
        if closed:
            raise YilianError(
                Category.CONFLICT, f"dead letter {', '.join(map(str, closed))} is already resolved"
            )
    unattributed = [r.dead_id for r in rows if not r.client_id]
    if unattributed and as_client is None:
        raise YilianError(
            Category.INVALID,
            f"dead letter {', '.join(map(str, unattributed))} has no sending client on record "
            "(received before senders were authenticated): name one with --as-client",
        )
    results = []
    for r in rows:
        client_id = r.client_id or as_client
        assert client_id is not None
        results.append(
            (
                r.dead_id,
                process(db, r.inbox_id, open_raw(db, bytes(r.raw)), settings=settings, client_id=client_id),
            )
        )
        if progress is not None:
            progress(len(results), len(rows))
    return results


def open_count(db: Database) -> int:
    dl = tables.dead_letter
    with read(db) as uow:
        return len(uow.conn.execute(select(dl.c.dead_id).where(and_(dl.c.status == "open"))).all())
