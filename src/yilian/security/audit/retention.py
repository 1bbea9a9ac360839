"""Retention: removing audit rows older than the cut-off, never any younger than 183 days.

Pruning cuts a prefix off the chain: the rows from the last checkpoint up to (not including)
the first row recorded at or after the cut-off. They are verified first — pruning must not
destroy the evidence of tampering — then a checkpoint records the seq and chain hash they end
at, so that ``verify`` continues from there, and they are deleted. The database's delete
trigger allows exactly this: a row older than 183 days, sealed, covered by a checkpoint.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import and_

from yilian.db import Database, UnitOfWork
from yilian.db.uow import transact
from yilian.fhir.search.values import instant_to_us
from yilian.kernel import clock
from yilian.kernel.errors import Category, YilianError
from yilian.security.audit.chain import lock_head
from yilian.security.audit.model import RETENTION_DAYS, AuditRecord
from yilian.security.audit.recorder import record
from yilian.security.audit.tables import audit_checkpoint, audit_event
from yilian.security.audit.verify import VerifyReport, latest_checkpoint, walk


@dataclass(frozen=True)
class PruneResult:
    rows: int  # rows removed
    up_to_seq: int  # the chain now starts after this seq (the checkpoint)
    chain_hash: str  # the chain hash it continues from


def earliest_allowed(now: dt.datetime | None = None) -> dt.datetime:
    """The latest cut-off a prune may use: ``RETENTION_DAYS`` before now."""
    return (now or clock.now()) - dt.timedelta(days=RETENTION_DAYS)


def _as_instant(before: dt.datetime | dt.date) -> dt.datetime:
    if isinstance(before, dt.datetime):
        return before if before.tzinfo else before.replace(tzinfo=dt.UTC)
    return dt.datetime(before.year, before.month, before.day, tzinfo=dt.UTC)


def _prune(uow: UnitOfWork, cutoff: int) -> PruneResult:
    conn = uow.conn
    lock_head(conn)  # no sealing while the prefix is cut
    anchor = latest_checkpoint(conn)
    report = VerifyReport(start_seq=anchor[0])
    last_seq, last_hash = walk(conn, report, anchor, limit=5, stop=lambda row: int(row["recorded"]) >= cutoff)
    if report.problems or report.omitted:
        first = report.problems[0].detail if report.problems else "too many problems"
        raise YilianError(
            Category.CONFLICT,
            f"refusing to prune: the rows to remove do not verify ({first}); run `yilian audit verify`",
        )
    if last_seq == anchor[0]:
        return PruneResult(0, anchor[0], anchor[1])
    conn.execute(
        audit_checkpoint.insert().values(
            up_to_seq=last_seq,
            chain_hash=last_hash,
            pruned_before=cutoff,
            rows_pruned=report.rows,
            created=instant_to_us(clock.now()),
        )
    )
    deleted = conn.execute(
        audit_event.delete().where(and_(audit_event.c.seq > anchor[0], audit_event.c.seq <= last_seq))
    ).rowcount
    return PruneResult(int(deleted), last_seq, last_hash)


def check_cutoff(before: dt.datetime | dt.date) -> dt.datetime:
    """``before`` as an instant, refused (``INVALID``) when it lies within the retention period."""
    instant = _as_instant(before)
    limit = earliest_allowed()
    if instant > limit:
        raise YilianError(
            Category.INVALID,
            f"refusing to prune audit records younger than {RETENTION_DAYS} days: "
            f"the cut-off must be on or before {limit.date().isoformat()} (asked: {instant.date().isoformat()})",
        )
    return instant


def prune(
    db: Database,
    before: dt.datetime | dt.date,
    *,
    audit: Callable[[PruneResult], AuditRecord] | None = None,
) -> PruneResult:
    """Remove sealed rows recorded before ``before``; refused for anything within 183 days.

    ``audit`` makes the AuditEvent of the prune itself from its result: it is written in the
    prune's transaction, so the log never loses rows without saying who removed them.
    """
    cutoff = instant_to_us(check_cutoff(before))

    def work(uow: UnitOfWork) -> PruneResult:
        result = _prune(uow, cutoff)
        if audit is not None:
            record(uow, audit(result))
        return result

    return transact(db, work)
