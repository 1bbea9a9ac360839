"""What the outbox holds, per destination (``yilian exchange outbox``)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy import case, func, select

from yilian.db import Database
from yilian.db.uow import read
from yilian.exchange.outbound import owners
from yilian.exchange.outbound.outbox import now_us
from yilian.exchange.outbound.tables import destination, message


@dataclass(frozen=True)
class DestinationStatus:
    dest_id: str
    kind: str
    active: bool
    endpoint: str
    criteria: str | None
    owner: str
    pending: int
    delivered: int
    skipped: int  # set aside by an operator (``yilian exchange skip``), kept with the reason
    oldest_pending_age_s: float | None
    failures: int
    last_error: str | None
    next_try: int | None  # µs since the epoch; None: as soon as there is work
    last_delivered_at: int | None


def outbox_status(db: Database) -> list[DestinationStatus]:
    m = message.c
    counts = (
        select(
            m.dest_id,
            func.sum(case((m.state == "pending", 1), else_=0)).label("pending"),
            func.sum(case((m.state == "delivered", 1), else_=0)).label("delivered"),
            func.sum(case((m.state == "skipped", 1), else_=0)).label("skipped"),
            func.min(case((m.state == "pending", m.created), else_=None)).label("oldest"),
        )
        .group_by(m.dest_id)
        .subquery()
    )
    now = now_us()
    with read(db) as uow:
        rows = uow.conn.execute(
            select(destination, counts.c.pending, counts.c.delivered, counts.c.skipped, counts.c.oldest)
            .outerjoin(counts, counts.c.dest_id == destination.c.dest_id)
            .order_by(destination.c.kind, destination.c.dest_id)
        ).all()
    out = []
    for r in rows:
        pending = int(r.pending or 0)
        out.append(
            DestinationStatus(
                dest_id=r.dest_id,
                kind=r.kind,
                active=bool(r.active),
                endpoint=r.endpoint,
                criteria=r.criteria,
                owner=owners.describe(json.loads(r.owner)) if r.owner else "platform",
                pending=pending,
                delivered=int(r.delivered or 0),
                skipped=int(r.skipped or 0),
                oldest_pending_age_s=(now - int(r.oldest)) / 1_000_000 if pending and r.oldest else None,
                failures=int(r.failures or 0),
                last_error=r.last_error if r.failures else None,
                next_try=r.next_try,
                last_delivered_at=r.last_delivered_at,
            )
        )
    return out
