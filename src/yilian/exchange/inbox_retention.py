"""Removing HL7 v2 messages from the inbox past their retention (``yilian exchange prune-inbox``).

The inbox keeps every message as received so that a failed one can be replayed byte for byte;
each carries names, ID numbers and phones (sealed at rest, but personal data all the same), and
a busy hospital sends hundreds of thousands a month. Once a message has done its work it need
not be kept for ever: messages older than the retention go if they were stored or recognised as
re-sends, or if they failed and their dead letter has since been resolved. Never removed: a
message still being processed (``received``), or one whose dead letter is open — it is what a
replay needs. The message log (``hl7_message``: sender, control id, digest, the ACK sent) stays,
so a late re-send of a pruned message is still recognised and answered with the same ACK.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import and_, exists, or_

from yilian.db import Database
from yilian.db.rewrite import delete_where
from yilian.exchange.tables import dead_letter, inbox
from yilian.kernel import clock
from yilian.kernel.errors import Category, YilianError

DAY_US = 86_400 * 1_000_000
MIN_RETENTION_DAYS = 1


def _done(cutoff_us: int) -> list[Any]:
    open_letter = exists().where(dead_letter.c.inbox_id == inbox.c.inbox_id, dead_letter.c.status == "open")
    return [
        inbox.c.received < cutoff_us,
        or_(inbox.c.state.in_(("stored", "duplicate")), and_(inbox.c.state == "failed", ~open_letter)),
    ]


def cutoff_us(older_than_days: float, now_us: int | None = None) -> int:
    """The instant (µs since epoch) before which messages received are past ``older_than_days``."""
    now = now_us if now_us is not None else int(clock.now().timestamp() * 1_000_000)
    return now - int(older_than_days * DAY_US)


def prune_inbox(
    db: Database,
    *,
    older_than_days: float,
    batch: int = 2000,
    now_us: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Delete the inbox messages done with and received more than ``older_than_days`` ago."""
    if not older_than_days >= MIN_RETENTION_DAYS:
        raise YilianError(
            Category.INVALID, f"retention must be at least {MIN_RETENTION_DAYS} day (got {older_than_days})"
        )
    cutoff = cutoff_us(older_than_days, now_us)
    return delete_where(db, inbox, _done(cutoff), batch=batch, progress=progress)


def prunable(db: Database, *, older_than_days: float, now_us: int | None = None) -> int:
    """How many messages ``prune_inbox`` with the same arguments would remove."""
    from sqlalchemy import func, select

    with db.engine.connect() as conn:
        query = select(func.count()).select_from(inbox).where(*_done(cutoff_us(older_than_days, now_us)))
        return int(conn.execute(query).scalar_one())
