"""Removing finished outbox messages past their retention (``yilian exchange prune-outbox``).

Every write queues one ``outbound_message`` row per destination, and a busy district node
forwards every write: without pruning the table grows by the region's write rate for ever.
Only finished messages go — ``delivered``, ``withheld`` (the owner may not see the resource)
and ``cancelled`` (the subscription or forwarding ended) — once older than the retention,
counted from when they finished (``delivered``) or, if that is unknown, from when they were
queued. Pending messages are never removed, nor are ``skipped`` ones: they are the record of an
operator's decision, with who and why. Numbering is unaffected (the per-destination counter
lives in ``outbound_sequence``).

Rows go in batches of their own transactions, so pruning a large backlog never holds a long
lock against the writers queueing new messages.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from yilian.db import Database
from yilian.db.rewrite import delete_where
from yilian.exchange.outbound.outbox import now_us
from yilian.exchange.outbound.tables import message
from yilian.kernel.errors import Category, YilianError

FINISHED = ("delivered", "withheld", "cancelled")
DAY_US = 86_400 * 1_000_000
MIN_RETENTION_DAYS = 1
DEFAULT_RETENTION_DAYS = 30


@dataclass(frozen=True)
class PruneResult:
    removed: int
    cutoff_us: int  # finished before this instant (µs since epoch) were removed
    remaining_finished: int


def check_retention(days: float) -> None:
    if not days >= MIN_RETENTION_DAYS:
        raise YilianError(
            Category.INVALID,
            f"retention must be at least {MIN_RETENTION_DAYS} day (got {days}): a receiver may still ask "
            "about what was just delivered",
        )


def _old(cutoff: int) -> tuple[Any, ...]:
    m = message.c
    return (m.state.in_(FINISHED), func.coalesce(m.delivered, m.created) < cutoff)


def cutoff_us(older_than_days: float, now: int | None = None) -> int:
    """The instant (µs since epoch) before which finished messages are past ``older_than_days``."""
    check_retention(older_than_days)
    return (now if now is not None else now_us()) - int(older_than_days * DAY_US)


def prunable(db: Database, *, older_than_days: float = DEFAULT_RETENTION_DAYS, now: int | None = None) -> int:
    """How many messages ``prune_outbox`` with the same arguments would remove."""
    cutoff = cutoff_us(older_than_days, now)
    with db.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(message).where(*_old(cutoff))).scalar_one())


def prune_outbox(
    db: Database,
    *,
    older_than_days: float = DEFAULT_RETENTION_DAYS,
    batch: int = 5000,
    now: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> PruneResult:
    """Delete finished messages that finished more than ``older_than_days`` ago; how many went."""
    cutoff = cutoff_us(older_than_days, now)
    m = message.c
    removed = delete_where(db, message, _old(cutoff), batch=batch, progress=progress)
    with db.engine.connect() as conn:
        left = int(
            conn.execute(select(func.count()).select_from(message).where(m.state.in_(FINISHED))).scalar_one()
        )
    return PruneResult(removed, cutoff, left)
