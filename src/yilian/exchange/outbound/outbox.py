"""The outbox: messages to deliver, written in the transaction of the change they announce.

A message row is inserted as soon as a write is seen (inside any savepoint the write is in,
so a batch entry that is rolled back takes its messages with it) and numbered just before the
transaction commits: the destinations' counter rows are locked in a fixed order (no deadlock
between two writers), each destination's new messages get the next numbers, and the locks are
held until commit. The next writer for that destination waits for the commit, so per
destination the numbers follow commit order with no gaps — a worker that has delivered
message *n* knows *n + 1* is the next change, never one that is still to commit.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable
from typing import Any

from sqlalchemy import bindparam, select, update

from yilian.db import UnitOfWork
from yilian.db.dialect import insert_ignore
from yilian.exchange.outbound.tables import message, sequence
from yilian.fhir.search.values import instant_to_us
from yilian.kernel import clock

_TXN = "yilian.exchange.outbox_txn"

# Set after every commit that queued something: an in-process worker wakes at once instead of
# at its next poll. Workers in other processes poll.
wakeup = threading.Event()


def now_us() -> int:
    return instant_to_us(clock.now())


def ensure_sequence(uow: UnitOfWork, dest_id: str) -> None:
    insert_ignore(uow.conn, sequence, [{"dest_id": dest_id, "next_seq": 1}])


def enqueue(
    uow: UnitOfWork,
    dest_ids: Iterable[str],
    *,
    res_type: str,
    res_id: str,
    version: int,
    deleted: bool,
) -> None:
    """Queue one change for each destination (numbered at commit)."""
    dests = list(dest_ids)
    if not dests:
        return
    txn = uow.state.get(_TXN)
    if txn is None:
        txn = uow.state[_TXN] = uuid.uuid4().hex
        uow.before_commit.append(lambda: number(uow))
        uow.after_commit.append(wakeup.set)
    now = now_us()
    uow.conn.execute(
        message.insert(),
        [
            {
                "dest_id": d,
                "seq": None,
                "txn": txn,
                "res_type": res_type,
                "res_id": res_id,
                "version": version,
                "deleted": deleted,
                "created": now,
                "state": "pending",
                "attempts": 0,
                "next_try": now,
                "last_error": None,
                "delivered": None,
            }
            for d in dests
        ],
    )


def number(uow: UnitOfWork) -> None:
    """Give this transaction's messages their sequence numbers (run just before commit)."""
    txn = uow.state.pop(_TXN, None)
    if txn is None:
        return
    rows = uow.conn.execute(
        select(message.c.msg_id, message.c.dest_id).where(message.c.txn == txn).order_by(message.c.msg_id)
    ).all()
    by_dest: dict[str, list[int]] = {}
    for row in rows:
        by_dest.setdefault(row.dest_id, []).append(int(row.msg_id))
    updates: list[dict[str, Any]] = []
    for dest_id in sorted(by_dest):  # one lock order for every writer
        ids = by_dest[dest_id]
        ensure_sequence(uow, dest_id)
        end = uow.conn.execute(
            update(sequence)
            .where(sequence.c.dest_id == dest_id)
            .values(next_seq=sequence.c.next_seq + len(ids))
            .returning(sequence.c.next_seq)
        ).scalar_one()
        first = int(end) - len(ids)
        updates.extend({"m": msg_id, "s": first + i} for i, msg_id in enumerate(ids))
    if updates:
        uow.conn.execute(
            update(message).where(message.c.msg_id == bindparam("m")).values(seq=bindparam("s"), txn=None),
            updates,
        )
