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

The close also posts the batch to the ledger, so that the trial balance shows who owes whom:
one ``clearing`` transaction per institution takes off each of its merchant points what the day
put on it, and puts each line's amount into the payer's clearing account for that institution
(``clearing:<payer>:<org>``: ``clearing:card-issuer:<org>``, ``clearing:fund:ncms:330500:<org>``).
After a close an institution's points hold only what is not cleared yet, and its clearing
accounts what each payer owes it for the closed days. The transaction is dated when the close
runs (it touches no wallet and no fund, so it is part of no later day's positions); ``ref`` is
the day it clears, and the close's report gives each line's ``clearing_txn_id``, which the
reconciliation checks against the ledger.

The close takes the day's row exclusively (the ledger's writers take it shared), so it sees
every transaction of the day and none can be added after; a day closes once. Everything — the
batch, its ties, the clearing transactions, the day's status — is one database transaction.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Select, String, case, func, insert, literal, literal_column, or_, select, update
from sqlalchemy.exc import IntegrityError

from yilian.db import UnitOfWork
from yilian.kernel import clock
from yilian.kernel.errors import Category
from yilian.payments import idempotency, ledger, service
from yilian.payments import tables as t
from yilian.payments.ledger import AccountSpec
from yilian.payments.model import BEIJING, ISSUER, business_date, clearing_account, from_us, refuse, to_us
from yilian.payments.payouts import payouts_of
from yilian.payments.publish_queue import DAY, enqueue
from yilian.payments.statements import transfer_code

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
    # Last, so that the busy merchant points are locked only for the end of the close.
    posted = _post_clearing(uow, key, lines)
    for line in lines:
        line["clearing_txn_id"] = posted.get(line["line_id"])
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


def _post_clearing(uow: UnitOfWork, key: str, lines: list[dict[str, Any]]) -> dict[int, str]:
    """One ``clearing`` transaction per institution paid on the day (see the module docstring):
    each of its merchant points gives up what the day's transactions put on it, and each payer's
    clearing account for it takes that payer's line. Returns, for each line that moved anything,
    its institution's transaction id (an institution whose every point and line nets to zero — a
    meal charged and refunded — has none).

    The points' amounts are one grouped query over the day's transactions and their merchant
    postings (every charge, refund and posted deposit has exactly one, on the point it was made
    at, ``org:<org>:…``: :func:`~yilian.payments.model.merchant_account`), the same shape as the
    batch's own; they must add up to the institution's lines, or the close is refused whole.
    Institutions are posted in id order and each transaction's accounts in id order, so two
    closes lock accounts in the same order."""
    x, p = t.txn, t.posting
    day_points: dict[str, dict[str, int]] = defaultdict(dict)
    for org, account_id, amount in uow.conn.execute(
        select(x.c.org, p.c.account_id, func.sum(p.c.amount))
        .select_from(
            x.join(
                p,
                (p.c.txn_id == x.c.txn_id)
                & p.c.account_id.like(literal("org:", String) + x.c.org + literal(":%", String)),
            )
        )
        .where(
            x.c.business_date == key,
            x.c.org.is_not(None),
            x.c.kind.not_in([literal_column("'top-up'"), literal_column("'clearing'")]),
        )
        .group_by(x.c.org, p.c.account_id)
    ):
        day_points[org][account_id] = int(amount)
    by_payee: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for line in lines:
        by_payee[line["payee"]].append(line)
    posted: dict[int, str] = {}
    for payee in sorted(by_payee):
        points, owed = day_points.get(payee, {}), by_payee[payee]
        if sum(points.values()) != sum(line["amount_fen"] for line in owed):
            raise AssertionError(f"{payee}: the day's merchant postings differ from its batch lines")
        postings = [
            (AccountSpec(point, "merchant", payee, None), -amount) for point, amount in points.items()
        ]
        postings += [
            (
                AccountSpec(clearing_account(line["payer"], payee), "clearing", line["payer"], None),
                line["amount_fen"],
            )
            for line in owed
        ]
        if not any(amount for _, amount in postings):
            continue
        txn_id = ledger.post(
            uow, kind="clearing", postings=postings, ref=key, org=payee, memo=f"clearing of {key}"
        ).txn_id
        posted.update((line["line_id"], txn_id) for line in owed)
    return posted


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
    # Days closed before the clearing was posted have no clearing_txn_id in their lines.
    clearing = {
        int(line["line_id"]): line["clearing_txn_id"] for line in report["lines"] if "clearing_txn_id" in line
    }
    report["reconciliation"] = reconcile(uow, day=day, detail=detail, party=party, clearing=clearing or None)
    paid = payouts_of(uow, key)
    for line in report["lines"]:
        line["payout"] = paid.get(int(line["line_id"]))
        line["transfer_code"] = transfer_code(key, int(line["line_id"]))
    report["outstanding_fen"] = sum(line["amount_fen"] for line in report["lines"] if line["payout"] is None)
    return report


def reconcile(
    uow: UnitOfWork,
    *,
    day: dt.date,
    detail: bool = False,
    party: Party | None = None,
    clearing: dict[int, str | None] | None = None,
) -> dict[str, Any]:
    """Tie every batch line to its transactions and the transactions back to the ledger.

    Checks: (1) each line's amount and count equal the sum and number of the transaction amounts
    recorded for it; (2) recomputing the per-transaction amounts from the postings gives exactly
    the recorded ties (compared in the database with ``EXCEPT`` both ways) — nothing in the day's
    ledger is missing from the batch, nothing is extra; (3) with ``clearing`` (line id → the
    clearing transaction the close reported), each line's clearing transaction is in the ledger,
    clears this day for the payee, and puts the line's amount in the payer's clearing account for
    the payee; and it posts to nothing but those accounts and the payee's merchant points (what
    it took from them balances what it put in, as every transaction does).
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
    if clearing is not None:
        problems.extend(_check_clearing(uow, key, lines, clearing, out_lines))
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


def _check_clearing(
    uow: UnitOfWork, key: str, lines: Any, clearing: dict[int, str | None], out_lines: list[dict[str, Any]]
) -> list[str]:
    """Check (3) of :func:`reconcile`; adds each line's ``clearing_txn_id`` to ``out_lines``."""
    x, p, a = t.txn, t.posting, t.account
    ids = sorted({txn_id for line in lines if (txn_id := clearing.get(int(line.line_id)))})
    txns = {
        r.txn_id: r
        for r in uow.conn.execute(select(x.c.txn_id, x.c.kind, x.c.ref, x.c.org).where(x.c.txn_id.in_(ids)))
    }
    postings: dict[str, dict[str, Any]] = defaultdict(dict)
    for r in uow.conn.execute(
        select(p.c.txn_id, p.c.account_id, p.c.amount, a.c.kind, a.c.owner)
        .select_from(p.join(a, a.c.account_id == p.c.account_id))
        .where(p.c.txn_id.in_(ids))
    ):
        postings[r.txn_id][r.account_id] = r
    problems = []
    for line, entry in zip(lines, out_lines, strict=True):
        line_id = int(line.line_id)
        txn_id = clearing.get(line_id)
        entry["clearing_txn_id"] = txn_id
        if txn_id is None:
            continue
        txn = txns.get(txn_id)
        if txn is None or (txn.kind, txn.ref, txn.org) != ("clearing", key, line.payee):
            problems.append(f"line {line_id}: the ledger has no clearing transaction {txn_id} for it")
            continue
        account = clearing_account(line.payer, line.payee)
        credited = postings[txn_id].get(account)  # none for a line of zero (no zero postings)
        if (0 if credited is None else int(credited.amount)) != line.amount_fen:
            problems.append(
                f"line {line_id}: clearing transaction {txn_id} does not put its amount in {account}"
            )
    # Each transaction: the payee's points and payers' clearing accounts for the payee, nothing
    # else (judged by the accounts alone, so a party that sees some of its lines judges it too).
    for txn_id, accounts in postings.items():
        if txn_id not in txns or txns[txn_id].kind != "clearing":
            continue  # reported above
        org = txns[txn_id].org
        stray = sorted(
            account_id
            for account_id, r in accounts.items()
            if not (r.kind == "merchant" and r.owner == org)
            and not (r.kind == "clearing" and account_id == clearing_account(r.owner, org))
        )
        if stray:
            problems.append(f"clearing transaction {txn_id} posts to accounts that are not {org}'s: {stray}")
    return problems
