"""Concurrent writers on both databases: 8 threads making charges against a few busy hospital
accounts and a shared insurance fund, with the top-ups that fund them and refunds among them, each
in its own transaction (retried on a transient failure, as the API does). No deadlock, no lost
update: afterwards every account — wallets, the hospitals' points, the fund, the cash channel —
holds exactly what the acknowledged operations say, every balance equals the sum of its postings,
the ledger balances, and there is one charge row and one transaction per acknowledged operation.

The issue's size, 10,000 charges (1,250 a writer), runs with ``scripts/load-tests``
(``YILIAN_LOAD_SCALE=full``); CI runs 40 a writer."""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import event, func, select

from tests.integration.payments.builders import make_coverage, make_patient, make_region
from tests.integration.payments.conftest import CardDesk
from yilian import payments
from yilian.db import Database, UnitOfWork
from yilian.db.uow import read, transact
from yilian.payments import tables as t
from yilian.payments.model import PaymentError, channel_account, merchant_account, wallet_account

T = TypeVar("T")
WRITERS = 8
CHARGES = 1_250 if os.environ.get("YILIAN_LOAD_SCALE") == "full" else 40  # acknowledged, per writer
FUND = "fund:ncms:330500"
DEADLOCK = "40P01"


def test_eight_writers_on_busy_accounts(db: Database, desk: CardDesk) -> None:
    with UnitOfWork(db, write=True) as uow:
        region = make_region(uow)
        cards, patients = [], {}
        for n in range(6):
            patient = make_patient(uow, given=f"并{n}")
            if n % 2:
                make_coverage(uow, patient_id=patient, payor_org=region.insurer, scheme="ncms")
            card = desk.issue(uow, patient)
            cards.append(card)
            patients[card] = patient
    hospitals = [region.city_hospital, region.township_centre]
    points = ["clinic", "pharmacy"]
    expected = Counter[str]()  # account → balance the acknowledged operations add up to
    outcomes = Counter[str]()
    # Database errors seen, by SQLSTATE: a deadlock would be retried by transact (and so hidden
    # from the outcome), hence counted here; 23505 is a concurrent first insert of an account or
    # a day's row, absorbed by its savepoint.
    failures = Counter[str]()
    lock = threading.Lock()
    errors: list[BaseException] = []

    def seen(context: Any) -> None:
        orig = (
            getattr(context.original_exception, "sqlstate", None) or type(context.original_exception).__name__
        )
        with lock:
            failures[str(orig)] += 1

    event.listen(db.engine, "handle_error", seen)

    def run(fn: Callable[[UnitOfWork], T], write: bool = True) -> T:
        return transact(db, fn, write=write)

    def book(amounts: dict[str, int]) -> None:
        with lock:
            for account, amount in amounts.items():
                expected[account] += amount

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        mine: list[str] = []
        charged = 0
        try:
            while charged < CHARGES:
                card = rng.choice(cards)
                wallet = wallet_account(patients[card])
                roll = rng.random()
                try:
                    if roll < 0.15:
                        amount = rng.randint(20_000, 200_000)
                        run(
                            lambda uow, c=card, a=amount: payments.top_up(
                                uow, card_no=c, amount_fen=a, channel="cash", org=hospitals[0]
                            )
                        )
                        book({wallet: amount, channel_account("cash"): -amount})
                        with lock:
                            outcomes["top-up"] += 1
                    elif roll < 0.9 or not mine:
                        items = [
                            payments.Item("YP-1", "药", "drug", rng.randint(100, 20_000), rng.randint(1, 2))
                        ]
                        org, point = rng.choice(hospitals), rng.choice(points)
                        done = run(
                            lambda uow, c=card, i=items, o=org, p=point: payments.charge(
                                uow, card_no=c, org=o, department=p, items=i
                            )
                        )
                        mine.append(done.charge_id)
                        charged += 1
                        s = done.shares
                        book(
                            {
                                wallet: -s.self_pay_fen,
                                merchant_account(org, point): s.total_fen,
                                FUND: -s.insurer_fen,
                            }
                        )
                        with lock:
                            outcomes["charge"] += 1
                    else:
                        charge_id = rng.choice(mine)
                        row = run(lambda uow, c=charge_id: payments.get_charge(uow, charge_id=c), write=False)
                        left = (
                            row.total_fen
                            - row.refunded_insurer_fen
                            - row.refunded_aid_fen
                            - row.refunded_self_fen
                        )
                        if left == 0:
                            continue
                        back = run(
                            lambda uow, c=charge_id, a=rng.randint(1, left): payments.refund(
                                uow, charge_id=c, amount_fen=a, reason="test"
                            )
                        )
                        book(
                            {
                                wallet_account(row.patient_id): back.self_pay_fen,
                                merchant_account(row.org, row.department): -back.amount_fen,
                                FUND: back.insurer_fen,
                            }
                        )
                        with lock:
                            outcomes["refund"] += 1
                except PaymentError as err:
                    assert err.reason == "insufficient-balance", err
                    with lock:
                        outcomes["refused"] += 1
        except BaseException as exc:  # surfaced below: a thread's failure must fail the test
            errors.append(exc)

    started = time.monotonic()
    threads = [threading.Thread(target=writer, args=(seed,)) for seed in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=3600)
    elapsed = time.monotonic() - started
    event.remove(db.engine, "handle_error", seen)
    assert not any(thread.is_alive() for thread in threads), "a writer is stuck (deadlock?)"
    assert errors == [], errors
    assert failures[DEADLOCK] == 0, failures
    assert outcomes["charge"] == WRITERS * CHARGES and outcomes["top-up"] > 0, outcomes
    with read(db) as uow:
        tb = payments.trial_balance(uow)
        assert tb.balanced, tb.as_json()
        balances = {str(a["account"]): int(str(a["balance_fen"])) for a in tb.accounts}
        for account, amount in expected.items():
            assert balances.get(account, 0) == amount, account
        for card in cards:
            assert payments.wallet(uow, card_no=card).balance_fen >= 0
        conn = uow.conn
        rows = {
            name: int(conn.execute(select(func.count()).select_from(table)).scalar_one())
            for name, table in (("charges", t.charge), ("refunds", t.refund), ("txns", t.txn))
        }
    assert rows == {
        "charges": outcomes["charge"],
        "refunds": outcomes["refund"],
        "txns": outcomes["top-up"] + outcomes["charge"] + outcomes["refund"],
    }
    print(  # the load-tests record (docs/payments.md)
        f"\n{db.engine.dialect.name}: {WRITERS} writers, {outcomes['charge']} charges, "
        f"{outcomes['top-up']} top-ups, {outcomes['refund']} refunds, {outcomes['refused']} refused, "
        f"in {elapsed:.1f} s ({outcomes['charge'] / elapsed:.0f} charges/s); "
        f"database errors by SQLSTATE: {dict(failures) or 'none'}; trial balance holds"
    )
