"""Messages that landed in the inbox but were never stored nor refused.

Intake writes a message's bytes in a transaction of their own before it tries anything else
(``intake.receive``). If the process dies between that commit and the transaction that stores
the message or records its dead letter (kill -9, a power cut, the machine's OOM killer), the
inbox row stays ``received`` and the sender got no ACK. A sender that resends is answered as
usual, and the stranded copy is then a duplicate; one that gave up would leave the message
landed but never processed. This module finds such messages and processes them as a replay
does, under the client that sent them, so that each ends stored, a duplicate or a dead letter
an operator sees.

A message counts as stranded only when it has waited longer than any intake takes
(``STALE_AFTER_S``): a younger one may still be in the hands of a listener, in this process or
another. Processing one twice is harmless: the message log makes the second a duplicate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import and_, select

from yilian.db import Database
from yilian.db.uow import read
from yilian.exchange import tables
from yilian.exchange.intake import IntakeSettings, Outcome, process
from yilian.exchange.raw_messages import open_raw
from yilian.kernel import clock

# Intake retries a message three times within a fraction of a second; five minutes leaves room
# for a slow database without touching a message still being worked on.
STALE_AFTER_S = 300.0


@dataclass(frozen=True)
class Stranded:
    inbox_id: str
    received: int  # µs since the epoch
    peer: str | None
    client_id: str | None


@dataclass(frozen=True)
class Recovered:
    stranded: Stranded
    outcome: Outcome | None  # None: no sending client on record, left as it was


def _now_us() -> int:
    return int(clock.now().timestamp() * 1_000_000)


def stranded(db: Database, *, older_than_s: float = STALE_AFTER_S, limit: int = 10_000) -> list[Stranded]:
    """Inbox messages still ``received`` after ``older_than_s`` seconds, oldest first."""
    cutoff = _now_us() - int(older_than_s * 1_000_000)
    i = tables.inbox.c
    with read(db) as uow:
        rows = uow.conn.execute(
            select(i.inbox_id, i.received, i.peer, i.client_id)
            .where(and_(i.state == "received", i.received < cutoff))
            .order_by(i.received, i.inbox_id)
            .limit(limit)
        ).all()
    return [Stranded(r.inbox_id, int(r.received), r.peer, r.client_id) for r in rows]


def recover(
    db: Database,
    *,
    settings: IntakeSettings,
    older_than_s: float = STALE_AFTER_S,
    as_client: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[Recovered]:
    """Process every stranded message, oldest first, as the client that sent it (``as_client``
    for messages landed before the sending client was recorded; without it they are left)."""
    found = stranded(db, older_than_s=older_than_s)
    done: list[Recovered] = []
    for n, s in enumerate(found, 1):
        client_id = s.client_id or as_client
        outcome = None
        if client_id is not None:
            outcome = process(
                db, s.inbox_id, _raw(db, s.inbox_id), settings=settings, client_id=client_id, peer=s.peer
            )
        done.append(Recovered(s, outcome))
        if progress is not None:
            progress(n, len(found))
    return done


def _raw(db: Database, inbox_id: str) -> bytes:
    with read(db) as uow:
        sealed = uow.conn.execute(
            select(tables.inbox.c.raw).where(tables.inbox.c.inbox_id == inbox_id)
        ).scalar_one()
    return open_raw(db, bytes(sealed))
