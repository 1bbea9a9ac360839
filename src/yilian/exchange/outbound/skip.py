"""Setting aside a message a destination will never take (``yilian exchange skip``).

Delivery is in order, so a message the receiver refuses for good (a city node answering 422 to a
resource whose references were loaded before forwarding began) holds back everything after it.
An operator who has looked at the error sets that one message aside: it is kept, marked
``skipped`` with who did it and why, and the destination goes on with the next one at once.
Nothing is deleted; ``yilian exchange outbox`` counts what was skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, update

from yilian.db import UnitOfWork
from yilian.exchange.outbound.outbox import now_us
from yilian.exchange.outbound.tables import destination, message
from yilian.kernel.errors import Category, YilianError


@dataclass(frozen=True)
class Skipped:
    dest_id: str
    seq: int
    res_type: str
    res_id: str
    version: int
    attempts: int
    last_error: str | None


def skip_message(
    uow: UnitOfWork, dest_id: str, *, reason: str, actor: str, seq: int | None = None
) -> Skipped:
    """Mark the destination's next pending message (or pending message ``seq``) ``skipped``."""
    if not reason.strip():
        raise YilianError(Category.INVALID, "a reason is required: a skipped message is kept with why")
    if (
        uow.conn.execute(select(destination.c.dest_id).where(destination.c.dest_id == dest_id)).first()
        is None
    ):
        raise YilianError(Category.NOT_FOUND, f"no destination {dest_id!r} (see `yilian exchange outbox`)")
    m = message.c
    query = select(message).where(m.dest_id == dest_id, m.state == "pending", m.seq.is_not(None))
    query = query.where(m.seq == seq) if seq is not None else query.order_by(m.seq).limit(1)
    row = uow.conn.execute(query).first()
    if row is None:
        what = f"message {seq}" if seq is not None else "message"
        raise YilianError(Category.NOT_FOUND, f"{dest_id} has no pending {what} to skip")
    note = f"skipped by {actor}: {reason.strip()}"
    if row.last_error:
        note += f" (last error: {row.last_error})"
    changed = uow.conn.execute(
        update(message)
        .where(m.msg_id == row.msg_id, m.state == "pending")
        .values(state="skipped", last_error=note[:2000])
    ).rowcount
    if changed != 1:
        raise YilianError(Category.CONFLICT, f"message {row.seq} of {dest_id} was just delivered or skipped")
    # The next message goes at once: the backoff belonged to the one set aside.
    uow.conn.execute(
        update(destination)
        .where(destination.c.dest_id == dest_id)
        .values(failures=0, next_try=None, updated=now_us())
    )
    return Skipped(
        dest_id, int(row.seq), row.res_type, row.res_id, int(row.version), int(row.attempts), row.last_error
    )
