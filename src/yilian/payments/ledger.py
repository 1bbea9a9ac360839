"""The double-entry ledger: accounts, transactions whose postings sum to zero, floors, holds.

Every money movement goes through :func:`post`, inside the caller's unit of work:

- the postings of one transaction sum to zero (checked before anything is written);
- the business day is taken *shared* (``pay_day`` row, ``FOR SHARE`` on PostgreSQL) and must be
  open; the day close takes the same row exclusively, so once a day is closed no transaction
  dated that day can still commit;
- each account's balance changes with one guarded ``UPDATE … WHERE balance + x - held >= floor``:
  the floor check and the change are one statement, so two concurrent charges can never both
  see the same balance (no read-modify-write race on either database; SQLite has one writer);
- accounts are updated in one fixed order (floored accounts first, then by id), so two
  transactions touching the same accounts take their row locks in the same order and cannot
  deadlock, and a refusal comes before any balance has changed.

Nothing is ever updated in ``pay_posting``: a correction is a new transaction.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import BigInteger, Connection, String, bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from yilian.db import UnitOfWork
from yilian.db.statements import Batch, Family, Statement, insert_row
from yilian.kernel import clock
from yilian.kernel.errors import Category
from yilian.kernel.ids import new_id
from yilian.kernel.money import format_fen
from yilian.payments import tables as t
from yilian.payments.model import business_date, refuse, to_us
from yilian.payments.publish_queue import CHARGE, WALLET, enqueue


@dataclass(frozen=True, slots=True)
class AccountSpec:
    """An account as first created: its kind, owner and floor (None: no floor)."""

    account_id: str
    kind: str
    owner: str
    floor: int | None


def _insert_account(conn: Connection, spec: AccountSpec) -> None:
    """Create the account unless another transaction just did (a savepoint keeps ours alive)."""
    try:
        with conn.begin_nested():
            conn.execute(
                insert(t.account),
                {
                    "account_id": spec.account_id,
                    "kind": spec.kind,
                    "owner": spec.owner,
                    "floor": spec.floor,
                    "balance": 0,
                    "held": 0,
                    "created": to_us(clock.now()),
                },
            )
    except IntegrityError:
        pass


_a = t.account
# The one statement that changes a balance: the floor check and the change cannot be separated.
_APPLY = Statement(
    lambda _: (
        update(_a)
        .where(_a.c.account_id == bindparam("account_id", type_=String))
        .where(
            (_a.c.floor.is_(None))
            | (_a.c.balance + bindparam("amount", type_=BigInteger) - _a.c.held >= _a.c.floor)
        )
        .values(balance=_a.c.balance + bindparam("amount", type_=BigInteger))
        .returning(_a.c.balance, _a.c.held)
    )
)
_BALANCE = Statement(
    lambda _: select(_a.c.balance, _a.c.held).where(_a.c.account_id == bindparam("account_id", type_=String))
)


def _apply(conn: Connection, spec: AccountSpec, amount: int) -> tuple[int, int]:
    """Add ``amount`` (signed) to the account's balance, refusing to cross its floor; the new
    (balance, held), read in the same statement (``RETURNING``: no second read for the reply)."""
    params = {"account_id": spec.account_id, "amount": amount}
    done = _APPLY.one_or_none(conn, params)
    if done is not None:
        return int(done[0]), int(done[1])
    row = _BALANCE.one_or_none(conn, params)
    if row is None:
        _insert_account(conn, spec)
        done = _APPLY.one_or_none(conn, params)
        if done is not None:
            return int(done[0]), int(done[1])
        row = _BALANCE.one_or_none(conn, params)
        assert row is not None
    raise refuse(
        Category.CONFLICT,
        "insufficient-balance",
        f"insufficient balance: {format_fen(row[0] - row[1])} available, {format_fen(-amount)} needed",
    )


_d = t.day
# Shared on PostgreSQL (the day close takes it exclusively); SQLite renders no lock clause, its
# one writer already excludes the close.
_DAY_SHARED = Statement(
    lambda _: (
        select(_d.c.status)
        .where(_d.c.business_date == bindparam("business_date", type_=String))
        .with_for_update(read=True)
    )
)


def open_day(conn: Connection, day: dt.date) -> None:
    """Take the business day shared; refuse if it is closed. Creates the day's row on first use."""
    params = {"business_date": day.isoformat()}
    found = _DAY_SHARED.one_or_none(conn, params)
    if found is None:
        try:
            with conn.begin_nested():
                conn.execute(insert(_d), {"business_date": params["business_date"], "status": "open"})
        except IntegrityError:
            pass
        found = _DAY_SHARED.one_or_none(conn, params)
        assert found is not None
    if found[0] != "open":
        raise refuse(
            Category.CONFLICT,
            "day-closed",
            f"business day {params['business_date']} is closed; nothing more can be posted to it",
        )


_x, _p = t.txn, t.posting
_TXN = insert_row(_x)
# All the postings of a transaction in one multi-row INSERT (one round trip, whatever their number).
_POSTINGS = Family(
    lambda _, n: insert(_p).values(
        [
            {
                "txn_id": bindparam("txn_id", type_=String),
                "account_id": bindparam(f"account_{i}", type_=String),
                "amount": bindparam(f"amount_{i}", type_=BigInteger),
            }
            for i in range(n)
        ]
    )
)


@dataclass(frozen=True, slots=True)
class Posted:
    txn_id: str
    at: int  # µs
    business_date: dt.date
    # (balance, held) after the transaction of every account it changed
    balances: dict[str, tuple[int, int]] = field(default_factory=dict)
    # Accounts without a floor still to be updated by :func:`finish`
    unfloored: tuple[tuple[AccountSpec, int], ...] = ()


def post(
    uow: UnitOfWork,
    *,
    kind: str,
    postings: Sequence[tuple[AccountSpec, int]],
    ref: str | None = None,
    org: str | None = None,
    memo: str | None = None,
    at: dt.datetime | None = None,
    batch: Batch | None = None,
) -> Posted:
    """Write one balanced transaction. Zero amounts are left out; nothing is written on refusal
    (the caller's transaction rolls back with the error). The wallets it moves, and the charge
    it records (``kind="charge"`` or ``"refund"``, ``ref`` naming it), are queued for their FHIR
    views in the same transaction.

    Accounts with a floor (wallets) are updated first, the others (an institution's point, a
    fund, a channel) last. Those are the busy rows — every charge at a hospital's pharmacy moves
    the same account — and each one's row lock is held from its update to the commit, so every
    statement between them and the commit is time during which no other charge there can go on.
    The transaction's rows, its publication and those updates are sent together by :func:`finish`
    (one round trip on PostgreSQL: nothing reads them back before). Given a ``batch``, they wait
    in it for the use case's own last writes, and the use case calls :func:`finish` with it. The
    locking order is unchanged: floored accounts, then the others by id.
    """
    lines = [(spec, amount) for spec, amount in postings if amount != 0]
    if sum(amount for _, amount in lines) != 0:
        raise AssertionError(f"unbalanced transaction: {[(s.account_id, a) for s, a in lines]}")
    if not lines:
        raise AssertionError("a transaction needs postings")
    when = at or clock.now()
    day = business_date(when)
    conn = uow.conn
    open_day(conn, day)
    # One update per account even if it appears twice, in a fixed order (no deadlocks).
    merged: dict[str, tuple[AccountSpec, int]] = {}
    for spec, amount in lines:
        previous = merged.get(spec.account_id)
        merged[spec.account_id] = (spec, amount + (previous[1] if previous else 0))
    # Accounts with a floor first: they are the only ones that can refuse, so a refusal comes
    # before anything is written and leaves even a caller's wider transaction untouched.
    balances: dict[str, tuple[int, int]] = {}
    unfloored: list[tuple[AccountSpec, int]] = []
    for account_id in sorted(merged):
        spec, amount = merged[account_id]
        if amount and spec.floor is not None:
            balances[account_id] = _apply(conn, spec, amount)
        elif amount:
            unfloored.append((spec, amount))
    txn_id = new_id()
    us = to_us(when)
    pending = batch if batch is not None else Batch(conn)
    _TXN.defer(
        pending,
        {
            "txn_id": txn_id,
            "kind": kind,
            "at": us,
            "business_date": day.isoformat(),
            "ref": ref,
            "org": org,
            "memo": memo,
        },
    )
    _POSTINGS.defer(
        pending,
        {"txn_id": txn_id},
        [{"account": spec.account_id, "amount": amount} for spec, amount in lines],
    )
    subjects = [account_id for account_id in merged if merged[account_id][0].kind == "wallet"]
    if kind in ("charge", "refund") and ref is not None:
        subjects.append(CHARGE + ref)
    enqueue(pending, subjects)
    posted = Posted(txn_id, us, day, balances, tuple(unfloored))
    return posted if batch is not None else finish(uow, posted, pending)


def finish(uow: UnitOfWork, posted: Posted, batch: Batch) -> Posted:
    """Send ``batch`` (what :func:`post` and the use case left in it) with the updates of the
    accounts without a floor, in id order; an account not there yet is created, then updated."""
    updates = [
        (spec, amount, _APPLY.defer(batch, {"account_id": spec.account_id, "amount": amount}))
        for spec, amount in posted.unfloored
    ]
    batch.send()
    for spec, amount, done in updates:
        row = done.one_or_none()
        # No row: the account does not exist yet (these have no floor to refuse at).
        posted.balances[spec.account_id] = (
            (int(row[0]), int(row[1])) if row else _apply(uow.conn, spec, amount)
        )
    return Posted(posted.txn_id, posted.at, posted.business_date, posted.balances)


def hold(uow: UnitOfWork, spec: AccountSpec, amount: int) -> None:
    """Reserve ``amount`` of the account's available balance (a pending transfer, no postings yet)."""
    a = t.account
    guarded = (
        update(a)
        .where(a.c.account_id == spec.account_id)
        .where((a.c.floor.is_(None)) | (a.c.balance - a.c.held - amount >= a.c.floor))
        .values(held=a.c.held + amount)
    )
    if uow.conn.execute(guarded).rowcount == 1:
        if spec.kind == "wallet":
            enqueue(uow.conn, [spec.account_id])
        return
    row = uow.conn.execute(select(a.c.balance, a.c.held).where(a.c.account_id == spec.account_id)).first()
    available = 0 if row is None else row.balance - row.held
    raise refuse(
        Category.CONFLICT,
        "insufficient-balance",
        f"insufficient balance for the deposit: {format_fen(available)} available, {format_fen(amount)} needed",
    )


def release(uow: UnitOfWork, account_id: str, amount: int) -> None:
    """Give back a reservation made by :func:`hold` (posted or voided)."""
    a = t.account
    done = uow.conn.execute(
        update(a).where(a.c.account_id == account_id, a.c.held >= amount).values(held=a.c.held - amount)
    )
    if done.rowcount != 1:
        raise AssertionError(f"release of {amount} on {account_id} exceeds what is held")
    if account_id.startswith(WALLET):
        enqueue(uow.conn, [account_id])


def balance_after(uow: UnitOfWork, posted: Posted, account_id: str) -> tuple[int, int]:
    """(balance, held) of an account after ``posted``: as the transaction's own update returned
    it, or read if the transaction did not touch the account."""
    found = posted.balances.get(account_id)
    return found if found is not None else balance(uow, account_id)


def balance(uow: UnitOfWork, account_id: str) -> tuple[int, int]:
    """(balance, held) of an account; (0, 0) when it has never been used."""
    row = _BALANCE.one_or_none(uow.conn, {"account_id": account_id})
    return (0, 0) if row is None else (int(row[0]), int(row[1]))


@dataclass(frozen=True)
class TrialBalance:
    accounts: list[dict[str, object]]
    debits_fen: int  # the sum of all negative postings, as a positive number
    credits_fen: int
    total_fen: int  # the sum of every account's balance: zero when the books balance
    mismatched: list[str]  # accounts whose cached balance differs from the sum of their postings

    @property
    def balanced(self) -> bool:
        return self.debits_fen == self.credits_fen and self.total_fen == 0 and not self.mismatched

    def as_json(self) -> dict[str, object]:
        return {
            "accounts": self.accounts,
            "debits_fen": self.debits_fen,
            "credits_fen": self.credits_fen,
            "total_fen": self.total_fen,
            "balanced": self.balanced,
            "mismatched_accounts": self.mismatched,
        }


def trial_balance(uow: UnitOfWork) -> TrialBalance:
    """Every account's balance, checked against its postings, and debits against credits."""
    a, p = t.account, t.posting
    conn = uow.conn
    sums = {
        row.account_id: int(row.total)
        for row in conn.execute(
            select(p.c.account_id, func.sum(p.c.amount).label("total")).group_by(p.c.account_id)
        )
    }
    debit, credit = conn.execute(
        select(
            func.coalesce(func.sum(p.c.amount).filter(p.c.amount < 0), 0),
            func.coalesce(func.sum(p.c.amount).filter(p.c.amount > 0), 0),
        )
    ).one()
    accounts: list[dict[str, object]] = []
    mismatched = []
    total = 0
    for row in conn.execute(
        select(a.c.account_id, a.c.kind, a.c.owner, a.c.balance, a.c.held).order_by(a.c.account_id)
    ):
        accounts.append(
            {
                "account": row.account_id,
                "kind": row.kind,
                "owner": row.owner,
                "balance_fen": int(row.balance),
                "held_fen": int(row.held),
            }
        )
        total += int(row.balance)
        if sums.pop(row.account_id, 0) != row.balance:
            mismatched.append(row.account_id)
    mismatched.extend(sums)  # postings on an account that does not exist
    return TrialBalance(accounts, -int(debit), int(credit), total, mismatched)
