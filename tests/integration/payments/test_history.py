"""The ledger's history is immutable, on both databases: refunds, deposit posts and every other
correction are new transactions that leave the earlier ones exactly as they were, and the
database itself (migration 0015) refuses to change or remove a transaction or a posting."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import delete, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from tests.integration.payments.builders import make_coverage, make_patient, make_region
from tests.integration.payments.conftest import CardDesk
from tests.support.databases import BACKENDS, drop_database, new_database
from yilian import payments
from yilian.db import UnitOfWork
from yilian.migrations import config, upgrade
from yilian.payments import tables as t

DRUG = payments.Item("YP-0001", "阿莫西林胶囊", "drug", 15_000, 2)
REFUSED = "is append-only"


def history(uow: UnitOfWork) -> dict[str, Any]:
    """Every transaction with its postings, as stored."""
    x, p = t.txn, t.posting
    txns = {tuple(r) for r in uow.conn.execute(select(x))}
    postings = {tuple(r) for r in uow.conn.execute(select(p))}
    return {"txns": txns, "postings": postings}


def postings_of(uow: UnitOfWork, txn_id: str) -> dict[str, int]:
    p = t.posting
    rows = uow.conn.execute(select(p.c.account_id, p.c.amount).where(p.c.txn_id == txn_id))
    return {r.account_id: int(r.amount) for r in rows}


def test_corrections_are_new_transactions_that_leave_the_old_ones_unchanged(
    uow: UnitOfWork, desk: CardDesk, pinned: list[dt.datetime]
) -> None:
    region = make_region(uow)
    patient = make_patient(uow)
    make_coverage(uow, patient_id=patient, payor_org=region.insurer, scheme="ncms")
    make_coverage(uow, patient_id=patient, payor_org=region.aid_fund, scheme="medical-aid")
    card = desk.issue(uow, patient)
    payments.top_up(uow, card_no=card, amount_fen=200_000, channel="cash", org=region.township_centre)
    paid = payments.charge(uow, card_no=card, org=region.township_centre, department="clinic", items=[DRUG])
    charge_postings = postings_of(uow, paid.txn_id)
    assert charge_postings == {
        f"org:{region.township_centre}:clinic": 30_000,
        f"wallet:{patient}": -6_000,
        "fund:ncms:330500": -18_000,
        "aid:medical-aid:330500": -6_000,
    }
    deposit = payments.hold_deposit(
        uow, card_no=card, org=region.township_centre, department="ward", amount_fen=50_000
    )
    before = history(uow)

    first = payments.refund(uow, charge_id=paid.charge_id, amount_fen=10_001, reason="one box back")
    rest = payments.refund(uow, charge_id=paid.charge_id, amount_fen=19_999, reason="the rest back")
    posted = payments.post_hold(uow, hold_id=deposit.hold_id, amount_fen=30_000)
    pinned[0] += dt.timedelta(days=1)
    report = payments.close_day(uow, day=dt.date(2026, 6, 15), closed_by="test")
    clearing = {line["clearing_txn_id"] for line in report["lines"]} - {None}

    after = history(uow)
    # Everything that was there is there, byte for byte; the corrections (and the day's clearing)
    # were only added.
    assert before["txns"] <= after["txns"] and before["postings"] <= after["postings"]
    added = {row[0] for row in after["txns"] - before["txns"]}
    assert added == {first.txn_id, rest.txn_id, posted.txn_id} | clearing and clearing
    assert postings_of(uow, paid.txn_id) == charge_postings
    # The two refunds reverse the charge exactly, as transactions of their own.
    returned: dict[str, int] = {}
    for refund in (first, rest):
        for account, amount in postings_of(uow, refund.txn_id).items():
            returned[account] = returned.get(account, 0) + amount
    assert returned == {account: -amount for account, amount in charge_postings.items()}
    tb = payments.trial_balance(uow)
    assert tb.balanced, tb.as_json()


@pytest.mark.parametrize(
    "change",
    [
        lambda: update(t.posting).values(amount=t.posting.c.amount + 1),
        lambda: update(t.posting).values(account_id="wallet:someone-else"),
        lambda: delete(t.posting),
        lambda: update(t.txn).values(memo="edited"),
        lambda: update(t.txn).values(business_date="2026-06-16"),
        lambda: delete(t.txn),
    ],
    ids=["posting-amount", "posting-account", "posting-delete", "txn-memo", "txn-date", "txn-delete"],
)
def test_the_database_refuses_to_change_or_remove_history(
    uow: UnitOfWork, desk: CardDesk, pinned: list[dt.datetime], change: Any
) -> None:
    region = make_region(uow)
    card = desk.issue(uow, make_patient(uow))
    payments.top_up(uow, card_no=card, amount_fen=10_000, channel="cash", org=region.city_hospital)
    before = history(uow)
    with pytest.raises(IntegrityError, match=REFUSED), uow.conn.begin_nested():
        uow.conn.execute(change())
    assert history(uow) == before
    # Writing new history is what the ledger does, and stays allowed.
    payments.top_up(uow, card_no=card, amount_fen=1, channel="cash", org=region.city_hospital)
    assert payments.trial_balance(uow).balanced


def test_postgresql_refuses_to_truncate_history(uow: UnitOfWork) -> None:
    if uow.conn.dialect.name != "postgresql":
        pytest.skip("SQLite has no TRUNCATE (a DELETE without WHERE is refused above)")
    for table in ("pay_posting", "pay_txn"):
        with pytest.raises(IntegrityError, match=REFUSED), uow.conn.begin_nested():
            uow.conn.execute(text(f"TRUNCATE {table}"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_migration_0015_adds_the_guard_and_takes_it_back(backend: str, tmp_path: Path) -> None:
    db, token = new_database(backend, tmp_path)
    row = {"txn_id": "t-1", "account_id": "channel:cash", "amount": 5}
    try:
        with db.engine.begin() as conn:
            conn.execute(insert(t.posting), row)
        with pytest.raises(IntegrityError, match=REFUSED), db.engine.begin() as conn:
            conn.execute(update(t.posting).values(amount=6))
        command.downgrade(config(db), "0014")
        with db.engine.begin() as conn:  # before 0015 nothing but the code kept history
            conn.execute(update(t.posting).values(amount=6))
        upgrade(db)
        with pytest.raises(IntegrityError, match=REFUSED), db.engine.begin() as conn:
            conn.execute(delete(t.posting))
        with db.engine.connect() as conn:
            assert conn.execute(select(t.posting.c.amount)).scalar_one() == 6
    finally:
        drop_database(backend, db, token)
