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
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Select, case, func, insert, literal, literal_column, or_, select, update
from sqlalchemy.exc import IntegrityError

from yilian.db import UnitOfWork
from yilian.kernel import clock
from yilian.kernel.errors import Category
from yilian.payments import idempotency, service
from yilian.payments import tables as t
from yilian.payments.model import BEIJING, ISSUER, business_date, from_us, refuse, to_us
from yilian.payments.publish_queue import DAY, enqueue

PAYER_KINDS = ("wallet", "fund", "aid")


def parse_day(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise refuse(
            Category.INVALID, "bad-date", f"a business day is written YYYY-MM-DD, not {text!r}"
        ) from None


@dataclass(frozen=True)
class Party:
    """Whose part of the clearing a reader sees: the lines an institution is paid (``org`` as
    payee) and the lines the funds it administers pay (``funds`` as payer)."""

    org: str
    funds: frozenset[str] = frozenset()

    def txns(self, x: Any, a: Any) -> Any:
        return or_(x.c.org == self.org, a.c.account_id.in_(sorted(self.funds)))

    def lines(self, bl: Any) -> Any:
        return or_(bl.c.payee == self.org, bl.c.payer.in_(sorted(self.funds)))

    def sees(self, line: dict[str, Any]) -> bool:
        return line["payee"] == self.org or line["payer"] in self.funds


def _per_txn(key: str, party: Party | None = None) -> Select[Any]:
    """(payer, payee, txn_id, amount the payer owes for it) for every clearing transaction of the
    day, computed by the database in one grouped query (no row of the day passes through Python).

    The payer and the kinds are written into the SQL as literals rather than bound: PostgreSQL must
    see the ``CASE`` in the select list and in ``GROUP BY`` as the same expression."""
    x, p, a = t.txn, t.posting, t.account
    payer = case(
        (a.c.kind == literal_column("'wallet'"), literal_column(f"'{ISSUER}'")), else_=a.c.account_id
    )
    where = [
        x.c.business_date == key,
        x.c.org.is_not(None),
        a.c.kind.in_([literal_column(f"'{k}'") for k in PAYER_KINDS]),
        x.c.kind != literal_column("'top-up'"),
    ]
    if party is not None:
        where.append(party.txns(x, a))
    return (
        select(
            payer.label("payer"),
            x.c.org.label("payee"),
            x.c.txn_id,
            (-func.sum(p.c.amount)).label("amount_fen"),
        )
        .select_from(x.join(p, p.c.txn_id == x.c.txn_id).join(a, a.c.account_id == p.c.account_id))
        .where(*where)
        .group_by(payer, x.c.org, x.c.txn_id)
    )


def _positions(uow: UnitOfWork, key: str, party: Party | None = None) -> list[dict[str, Any]]:
    """The day's lines so far (payer, payee, amount, transactions), aggregated in the database."""
    per = _per_txn(key, party).subquery()
    rows = uow.conn.execute(
        select(
            per.c.payer,
            per.c.payee,
            func.sum(per.c.amount_fen).label("amount_fen"),
            func.count().label("txn_count"),
        )
        .group_by(per.c.payer, per.c.payee)
        .order_by(per.c.payer, per.c.payee)
    )
    return [
        {"payer": r.payer, "payee": r.payee, "amount_fen": int(r.amount_fen), "txn_count": int(r.txn_count)}
        for r in rows
    ]


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
    # Set-based: the lines are one INSERT … SELECT grouped by (payer, payee), and the ties of
    # each line to its transactions a second one joining the per-transaction amounts to the
    # lines just written; a million transactions never become Python objects.
    per = _per_txn(key).subquery()
    bl = t.batch_line
    conn.execute(
        insert(bl).from_select(
            ["business_date", "payer", "payee", "amount_fen", "txn_count"],
            select(
                literal(key),
                per.c.payer,
                per.c.payee,
                func.sum(per.c.amount_fen),
                func.count(),
            ).group_by(per.c.payer, per.c.payee),
        )
    )
    conn.execute(
        insert(t.batch_txn).from_select(
            ["line_id", "txn_id", "amount_fen"],
            select(bl.c.line_id, per.c.txn_id, per.c.amount_fen).select_from(
                per.join(
                    bl,
                    (bl.c.business_date == key) & (bl.c.payer == per.c.payer) & (bl.c.payee == per.c.payee),
                )
            ),
        )
    )
    lines = [
        {
            "line_id": int(r.line_id),
            "payer": r.payer,
            "payee": r.payee,
            "amount_fen": int(r.amount_fen),
            "txn_count": int(r.txn_count),
        }
        for r in conn.execute(
            select(bl.c.line_id, bl.c.payer, bl.c.payee, bl.c.amount_fen, bl.c.txn_count).where(
                bl.c.business_date == key
            )
        )
    ]
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
    enqueue(conn, [DAY + key])  # its PaymentReconciliations, one per party
    return report


def _totals(lines: list[dict[str, Any]]) -> dict[str, Any]:
    by_payer: dict[str, int] = defaultdict(int)
    by_payee: dict[str, int] = defaultdict(int)
    for line in lines:
        by_payer[line["payer"]] += line["amount_fen"]
        by_payee[line["payee"]] += line["amount_fen"]
    return {"by_payer": dict(sorted(by_payer.items())), "by_payee": dict(sorted(by_payee.items()))}


def day_report(
    uow: UnitOfWork, *, day: dt.date, detail: bool = False, party: Party | None = None
) -> dict[str, Any]:
    """The day as closed (with its reconciliation re-checked against the ledger now), or, for a
    day still open, the positions so far (not a batch: they can still change).

    ``party``: only the lines an institution is paid and its funds pay (what a hospital or an
    insurer may see of the clearing); the totals, the transaction count and the reconciliation
    are then of those lines alone."""
    d = t.day
    key = day.isoformat()
    row = uow.conn.execute(select(d.c.status, d.c.report).where(d.c.business_date == key)).first()
    if row is None or row.status != "closed":
        lines = _positions(uow, key, party)
        return {"business_date": key, "status": "open", "lines": lines, "totals": _totals(lines)}
    report: dict[str, Any] = orjson.loads(row.report)
    if party is not None:
        report["lines"] = [line for line in report["lines"] if party.sees(line)]
        report["totals"] = _totals(report["lines"])
        per = _per_txn(key, party).subquery()
        report["transactions"] = int(
            uow.conn.execute(select(func.count(func.distinct(per.c.txn_id)))).scalar_one()
        )
    report["reconciliation"] = reconcile(uow, day=day, detail=detail, party=party)
    return report


def reconcile(
    uow: UnitOfWork, *, day: dt.date, detail: bool = False, party: Party | None = None
) -> dict[str, Any]:
    """Tie every batch line to its transactions and the transactions back to the ledger.

    Checks: (1) each line's amount and count equal the sum and number of the transaction amounts
    recorded for it; (2) recomputing the per-transaction amounts from the postings gives exactly
    the recorded ties (compared in the database with ``EXCEPT`` both ways) — nothing in the day's
    ledger is missing from the batch, nothing is extra.
    """
    bl, bt = t.batch_line, t.batch_txn
    key = day.isoformat()
    conn = uow.conn
    line_where = [bl.c.business_date == key]
    if party is not None:
        line_where.append(party.lines(bl))
    tied = (
        select(bt.c.line_id, func.sum(bt.c.amount_fen).label("tied"), func.count().label("n"))
        .group_by(bt.c.line_id)
        .subquery()
    )
    lines = conn.execute(
        select(bl.c.line_id, bl.c.payer, bl.c.payee, bl.c.amount_fen, bl.c.txn_count, tied.c.tied, tied.c.n)
        .select_from(bl.outerjoin(tied, tied.c.line_id == bl.c.line_id))
        .where(*line_where)
        .order_by(bl.c.line_id)
    ).all()
    problems = []
    out_lines: list[dict[str, Any]] = []
    for line in lines:
        tied_fen, count = int(line.tied or 0), int(line.n or 0)
        if tied_fen != line.amount_fen or count != line.txn_count:
            problems.append(f"line {line.line_id}: amount or count differs from its transactions")
        out_lines.append({"line_id": int(line.line_id), "tied_fen": tied_fen, "txn_count": count})
    recorded = (
        select(bl.c.payer, bl.c.payee, bt.c.txn_id, bt.c.amount_fen)
        .select_from(bt.join(bl, bl.c.line_id == bt.c.line_id))
        .where(*line_where)
    )
    ledger_now = _per_txn(key, party)
    for label, query in (
        ("the ledger has transactions that no batch line ties", ledger_now.except_(recorded)),
        ("batch lines tie transactions the ledger does not have", recorded.except_(ledger_now)),
    ):
        diff = query.subquery()
        for r in conn.execute(
            select(diff.c.payer, diff.c.payee, func.count())
            .group_by(diff.c.payer, diff.c.payee)
            .order_by(diff.c.payer, diff.c.payee)
        ):
            problems.append(f"{label}: {r.payer} → {r.payee} ({r[2]} transactions)")
    if detail and out_lines:
        ties: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for r in conn.execute(
            select(bt.c.line_id, bt.c.txn_id, bt.c.amount_fen)
            .where(bt.c.line_id.in_([entry["line_id"] for entry in out_lines]))
            .order_by(bt.c.line_id, bt.c.txn_id)
        ):
            ties[int(r.line_id)].append({"txn_id": r.txn_id, "amount_fen": int(r.amount_fen)})
        for entry in out_lines:
            entry["transactions"] = ties.get(entry["line_id"], [])
    return {"reconciled": not problems, "problems": problems, "lines": out_lines}
