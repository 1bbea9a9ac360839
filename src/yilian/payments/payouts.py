"""Paying a closed day's batch lines (清算划拨): the transfer that settles what a payer owes.

The close puts what each payer (the card issuer, a fund) owes each institution for the day into
the payer's clearing account for it (``clearing:<payer>:<org>``, see ``clearing.py``). The money
itself moves outside the platform, by bank transfer; recording that transfer against its batch
line is what brings the clearing account back down. Without it the clearing accounts only grow
and nobody can tell from the books what is still owed.

A payout is one ledger transaction (kind ``payout``, ``ref`` ``<date>#<line>``, dated when it is
recorded): the line's amount off the clearing account and onto the ``transfer`` channel, through
which it leaves the platform's books — as a bank top-up came in through a channel. A line whose
amount is negative (refunds of earlier days outweighing the day's charges) is paid the other
way, by the institution, and recorded the same. Each line is paid once: its id is the primary
key of ``pay_payout``, so a retry or a second operator at the same moment is refused and
nothing is posted twice.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from yilian.db import UnitOfWork
from yilian.kernel import clock
from yilian.kernel.errors import Category
from yilian.payments import ledger
from yilian.payments import tables as t
from yilian.payments.ledger import AccountSpec
from yilian.payments.model import BEIJING, channel_account, clearing_account, from_us, refuse, to_us
from yilian.payments.publish_queue import DAY, enqueue

CHANNEL = "transfer"


@dataclass(frozen=True)
class Payout:
    line_id: int
    business_date: str
    payer: str
    payee: str
    amount_fen: int
    txn_id: str
    reference: str
    paid_at: int  # µs
    paid_by: str

    def as_json(self) -> dict[str, Any]:
        return {
            "line_id": self.line_id,
            "business_date": self.business_date,
            "payer": self.payer,
            "payee": self.payee,
            "amount_fen": self.amount_fen,
            "txn_id": self.txn_id,
            "reference": self.reference,
            "paid_at": from_us(self.paid_at).astimezone(BEIJING).isoformat(),
            "paid_by": self.paid_by,
        }


def _reference(text: str) -> str:
    value = (text or "").strip()
    if not value or len(value) > 64 or any(ord(c) < 32 for c in value):
        raise refuse(
            Category.INVALID,
            "bad-reference",
            "reference must be the transfer's reference: 1 to 64 printable characters",
        )
    return value


def record_payout(uow: UnitOfWork, *, day: dt.date, line_id: int, reference: str, paid_by: str) -> Payout:
    """Record that batch line ``line_id`` of the closed ``day`` was paid by the transfer
    ``reference``, and post it. Refused, with nothing posted, for a line of another day or none,
    a day not closed, a line with nothing to pay, and a line already paid."""
    reference = _reference(reference)
    key = day.isoformat()
    conn = uow.conn
    status = conn.execute(select(t.day.c.status).where(t.day.c.business_date == key)).scalar_one_or_none()
    if status != "closed":
        raise refuse(
            Category.CONFLICT,
            "day-not-closed",
            f"business day {key} is not closed: it has no batch to pay yet",
        )
    bl = t.batch_line
    line = conn.execute(
        select(bl.c.payer, bl.c.payee, bl.c.amount_fen).where(
            bl.c.line_id == line_id, bl.c.business_date == key
        )
    ).first()
    if line is None:
        raise refuse(Category.NOT_FOUND, "unknown-line", f"business day {key} has no batch line {line_id}")
    amount = int(line.amount_fen)
    if amount == 0:
        raise refuse(
            Category.CONFLICT,
            "nothing-to-pay",
            f"batch line {line_id} nets to nothing: there is nothing to pay",
        )
    already = _payout_row(uow, line_id)
    if already is not None:
        raise _paid(line_id, already)
    now = clock.now()
    txn_id = ledger.post(
        uow,
        kind="payout",
        postings=[
            (AccountSpec(clearing_account(line.payer, line.payee), "clearing", line.payer, None), -amount),
            (AccountSpec(channel_account(CHANNEL), "channel", CHANNEL, None), amount),
        ],
        ref=f"{key}#{line_id}",
        org=line.payee,
        memo=f"payout of {key} line {line_id}: {reference}",
        at=now,
    ).txn_id
    paid_at, who = to_us(now), paid_by[:160]
    row = {
        "line_id": line_id,
        "business_date": key,
        "txn_id": txn_id,
        "reference": reference,
        "paid_at": paid_at,
        "paid_by": who,
    }
    try:
        # The primary key decides between two payouts of the same line at the same moment: the
        # loser's insert fails here and its whole transaction, ledger posting included, rolls back.
        with conn.begin_nested():
            conn.execute(insert(t.payout), row)
    except IntegrityError:
        raise _paid(line_id, _payout_row(uow, line_id)) from None
    enqueue(conn, [DAY + key])  # its PaymentReconciliations show the transfer
    return Payout(line_id, key, line.payer, line.payee, amount, txn_id, reference, paid_at, who)


def _payout_row(uow: UnitOfWork, line_id: int) -> Any:
    p = t.payout.c
    return uow.conn.execute(select(p.txn_id, p.reference, p.paid_at).where(p.line_id == line_id)).first()


def _paid(line_id: int, row: Any) -> Exception:
    said = (
        f" (transfer {row.reference}, {from_us(row.paid_at).astimezone(BEIJING):%Y-%m-%d %H:%M})"
        if row
        else ""
    )
    return refuse(Category.CONFLICT, "line-paid", f"batch line {line_id} is already paid{said}")


def payouts_of(uow: UnitOfWork, day: str) -> dict[int, dict[str, Any]]:
    """Each paid line of ``day`` (by line id): its transfer, when, by whom, and the transaction."""
    p = t.payout.c
    return {
        int(r.line_id): {
            "txn_id": r.txn_id,
            "reference": r.reference,
            "paid_at": from_us(int(r.paid_at)).astimezone(BEIJING).isoformat(),
            "paid_by": r.paid_by,
        }
        for r in uow.conn.execute(
            select(p.line_id, p.txn_id, p.reference, p.paid_at, p.paid_by).where(p.business_date == day)
        )
    }
