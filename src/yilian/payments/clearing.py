"""Daily clearing (日终清算): the positions of one business day, as a settlement batch.

For every transaction of the day that concerns an institution (charges, refunds, posted
deposits), each posting on a payer's account becomes part of one batch line:

- postings on card wallets → a line from the card issuer (who holds the stored value) to the
  institution;
- postings on an insurance fund or the medical-aid fund → a line from that fund to the institution.

A line's amount is what the payer owes (charges less refunds: the negated sum of the postings);
``pay_batch_txn`` records every transaction each line clears and with how much, so the
reconciliation report can tie each line back to the ledger. Top-ups move money between a
channel and a wallet and concern no institution's position.

The close takes the day's row exclusively (the ledger's writers take it shared), so it sees
every transaction of the day and none can be added after; a day closes once.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

import orjson
from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError

from yilian.db import UnitOfWork
from yilian.kernel import clock
from yilian.kernel.errors import Category
from yilian.payments import idempotency, service
from yilian.payments import tables as t
from yilian.payments.model import BEIJING, ISSUER, business_date, from_us, refuse, to_us

PAYER_KINDS = ("wallet", "fund", "aid")


def parse_day(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise refuse(
            Category.INVALID, "bad-date", f"a business day is written YYYY-MM-DD, not {text!r}"
        ) from None


def _positions(uow: UnitOfWork, day: dt.date) -> dict[tuple[str, str], dict[str, int]]:
    """(payer, institution) → {txn_id: amount the payer owes for it}."""
    x, p, a = t.txn, t.posting, t.account
    rows = uow.conn.execute(
        select(x.c.txn_id, x.c.org, a.c.kind, a.c.account_id, func.sum(p.c.amount).label("amount"))
        .join(p, p.c.txn_id == x.c.txn_id)
        .join(a, a.c.account_id == p.c.account_id)
        .where(
            x.c.business_date == day.isoformat(),
            x.c.org.is_not(None),
            a.c.kind.in_(PAYER_KINDS),
            x.c.kind != "top-up",
        )
        .group_by(x.c.txn_id, x.c.org, a.c.kind, a.c.account_id)
    )
    out: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
    for row in rows:
        who = ISSUER if row.kind == "wallet" else row.account_id
        per_txn = out[(who, row.org)]
        per_txn[row.txn_id] = per_txn.get(row.txn_id, 0) - int(row.amount)
    return out


def _lines_json(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(lines, key=lambda line: (line["payer"], line["payee"]))


def close_day(uow: UnitOfWork, *, day: dt.date, closed_by: str) -> dict[str, Any]:
    """Close a finished business day: write its batch and freeze it. Refused if already closed.

    The nightly housekeeping rides along in the same transaction: deposit holds past their expiry
    are released and idempotency keys past their retention are dropped.
    """
    today = business_date(clock.now())
    if day >= today:
        raise refuse(
            Category.CONFLICT,
            "day-not-over",
            f"business day {day} is not over yet (today is {today}, Beijing time)",
        )
    # Housekeeping first, before the day's row is locked: holds take their own row locks.
    service.expire_holds(uow)
    idempotency.purge(uow)
    conn = uow.conn
    d = t.day
    key = day.isoformat()
    locked = select(d.c.status).where(d.c.business_date == key)
    if conn.dialect.name == "postgresql":
        locked = locked.with_for_update()
    status = conn.execute(locked).scalar_one_or_none()
    if status is None:
        try:
            with conn.begin_nested():
                conn.execute(insert(d), {"business_date": key, "status": "open"})
        except IntegrityError:
            pass
        status = conn.execute(locked).scalar_one()
    if status != "open":
        raise refuse(Category.CONFLICT, "day-closed", f"business day {key} is already closed")
    positions = _positions(uow, day)
    lines: list[dict[str, Any]] = []
    for (payer, payee), per_txn in sorted(positions.items()):
        amount = sum(per_txn.values())
        line_id = conn.execute(
            insert(t.batch_line).returning(t.batch_line.c.line_id),
            {
                "business_date": key,
                "payer": payer,
                "payee": payee,
                "amount_fen": amount,
                "txn_count": len(per_txn),
            },
        ).scalar_one()
        conn.execute(
            insert(t.batch_txn),
            [
                {"line_id": line_id, "txn_id": txn_id, "amount_fen": value}
                for txn_id, value in sorted(per_txn.items())
            ],
        )
        lines.append(
            {
                "line_id": int(line_id),
                "payer": payer,
                "payee": payee,
                "amount_fen": amount,
                "txn_count": len(per_txn),
            }
        )
    txn_count = conn.execute(
        select(func.count()).select_from(t.txn).where(t.txn.c.business_date == key)
    ).scalar_one()
    now = to_us(clock.now())
    report = {
        "business_date": key,
        "status": "closed",
        "closed_at": from_us(now).astimezone(BEIJING).isoformat(),
        "closed_by": closed_by,
        "transactions": int(txn_count),
        "lines": _lines_json(lines),
        "totals": _totals(lines),
    }
    body = orjson.dumps(report)
    conn.execute(
        update(d)
        .where(d.c.business_date == key)
        .values(status="closed", closed_at=now, closed_by=closed_by, txn_count=int(txn_count), report=body)
    )
    return report


def _totals(lines: list[dict[str, Any]]) -> dict[str, Any]:
    by_payer: dict[str, int] = defaultdict(int)
    by_payee: dict[str, int] = defaultdict(int)
    for line in lines:
        by_payer[line["payer"]] += line["amount_fen"]
        by_payee[line["payee"]] += line["amount_fen"]
    return {"by_payer": dict(sorted(by_payer.items())), "by_payee": dict(sorted(by_payee.items()))}


def day_report(uow: UnitOfWork, *, day: dt.date, detail: bool = False) -> dict[str, Any]:
    """The day as closed (with its reconciliation re-checked against the ledger now), or, for a
    day still open, the positions so far (not a batch: they can still change)."""
    d = t.day
    key = day.isoformat()
    row = uow.conn.execute(select(d.c.status, d.c.report).where(d.c.business_date == key)).first()
    if row is None or row.status != "closed":
        positions = _positions(uow, day)
        lines = [
            {"payer": payer, "payee": payee, "amount_fen": sum(v.values()), "txn_count": len(v)}
            for (payer, payee), v in sorted(positions.items())
        ]
        return {"business_date": key, "status": "open", "lines": lines, "totals": _totals(lines)}
    report: dict[str, Any] = orjson.loads(row.report)
    report["reconciliation"] = reconcile(uow, day=day, detail=detail)
    return report


def reconcile(uow: UnitOfWork, *, day: dt.date, detail: bool = False) -> dict[str, Any]:
    """Tie every batch line to its transactions and the transactions back to the ledger.

    Checks: (1) each line's amount equals the sum of the transaction amounts recorded for it;
    (2) recomputing the positions from the postings gives the same lines, transaction by
    transaction — nothing in the day's ledger is missing from the batch, nothing is extra.
    """
    bl, bt = t.batch_line, t.batch_txn
    key = day.isoformat()
    lines = uow.conn.execute(select(bl).where(bl.c.business_date == key).order_by(bl.c.line_id)).all()
    tied: dict[int, dict[str, int]] = defaultdict(dict)
    ids = [line.line_id for line in lines]
    if ids:
        for row in uow.conn.execute(
            select(bt.c.line_id, bt.c.txn_id, bt.c.amount_fen).where(bt.c.line_id.in_(ids))
        ):
            tied[int(row.line_id)][row.txn_id] = int(row.amount_fen)
    ledger_now = _positions(uow, day)
    problems = []
    out_lines = []
    for line in lines:
        txns = tied.get(int(line.line_id), {})
        if sum(txns.values()) != line.amount_fen or len(txns) != line.txn_count:
            problems.append(f"line {line.line_id}: amount or count differs from its transactions")
        if ledger_now.pop((line.payer, line.payee), None) != txns:
            problems.append(f"line {line.line_id} ({line.payer} → {line.payee}): differs from the ledger")
        entry: dict[str, Any] = {
            "line_id": int(line.line_id),
            "tied_fen": sum(txns.values()),
            "txn_count": len(txns),
        }
        if detail:
            entry["transactions"] = [{"txn_id": k, "amount_fen": v} for k, v in sorted(txns.items())]
        out_lines.append(entry)
    for payer, payee in ledger_now:
        problems.append(f"the ledger has {payer} → {payee} positions that no batch line clears")
    return {"reconciled": not problems, "problems": problems, "lines": out_lines}
