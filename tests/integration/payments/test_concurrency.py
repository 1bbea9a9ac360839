"""Concurrent writers on both databases: 8 threads making charges, refunds and top-ups against a few
busy hospital accounts and shared insurance funds, each in its own transaction (retried on a
transient failure, as the API does). No deadlock, no lost update: afterwards every balance equals
the sum of its postings, the ledger balances, and the wallets hold exactly what the acknowledged
operations say."""

from __future__ import annotations

import os
import random
import threading
from collections import Counter

from tests.integration.payments.builders import make_coverage, make_patient, make_region
from tests.integration.payments.conftest import CardDesk
from yilian import payments
from yilian.db import Database, UnitOfWork
from yilian.db.uow import read, transact
from yilian.payments.model import PaymentError

WRITERS = 8
# Per writer: the issue's 10,000 operations with scripts/load-tests (YILIAN_LOAD_SCALE=full).
OPERATIONS = 1_250 if os.environ.get("YILIAN_LOAD_SCALE") == "full" else 60


def test_eight_writers_on_busy_accounts(db: Database, desk: CardDesk) -> None:
    with UnitOfWork(db, write=True) as uow:
        region = make_region(uow)
        cards = []
        for n in range(6):
            patient = make_patient(uow, given=f"并{n}")
            if n % 2:
                make_coverage(uow, patient_id=patient, payor_org=region.insurer, scheme="ncms")
            cards.append(desk.issue(uow, patient))
    hospitals = [region.city_hospital, region.township_centre]
    expected = Counter[str]()
    outcomes = Counter[str]()
    lock = threading.Lock()
    errors: list[BaseException] = []

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        mine: list[str] = []
        try:
            for _ in range(OPERATIONS):
                card = rng.choice(cards)
                roll = rng.random()
                try:
                    if roll < 0.3:
                        amount = rng.randint(1_000, 50_000)
                        transact(
                            db,
                            lambda uow, c=card, a=amount: payments.top_up(
                                uow, card_no=c, amount_fen=a, channel="cash", org=hospitals[0]
                            ),
                        )
                        with lock:
                            expected[card] += amount
                            outcomes["top-up"] += 1
                    elif roll < 0.85 or not mine:
                        items = [
                            payments.Item("YP-1", "药", "drug", rng.randint(100, 20_000), rng.randint(1, 2))
                        ]
                        done = transact(
                            db,
                            lambda uow, c=card, i=items: payments.charge(
                                uow,
                                card_no=c,
                                org=rng.choice(hospitals),
                                department=rng.choice(["clinic", "pharmacy"]),
                                items=i,
                            ),
                        )
                        mine.append(done.charge_id)
                        with lock:
                            expected[card] -= done.shares.self_pay_fen
                            outcomes["charge"] += 1
                    else:
                        charge_id = rng.choice(mine)
                        row = transact(
                            db, lambda uow, c=charge_id: payments.get_charge(uow, charge_id=c), write=False
                        )
                        left = (
                            row.total_fen
                            - row.refunded_insurer_fen
                            - row.refunded_aid_fen
                            - row.refunded_self_fen
                        )
                        if left == 0:
                            continue
                        done_refund = transact(
                            db,
                            lambda uow, c=charge_id, a=rng.randint(1, left): payments.refund(
                                uow, charge_id=c, amount_fen=a, reason="test"
                            ),
                        )
                        with lock:
                            expected[row.card_no] += done_refund.self_pay_fen
                            outcomes["refund"] += 1
                except PaymentError as err:
                    assert err.reason == "insufficient-balance", err
                    with lock:
                        outcomes["refused"] += 1
        except BaseException as exc:  # surfaced below: a thread's failure must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(seed,)) for seed in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert not any(thread.is_alive() for thread in threads), "a writer is stuck (deadlock?)"
    assert errors == [], errors
    assert outcomes["charge"] > 100 and outcomes["top-up"] > 50, outcomes
    with read(db) as uow:
        tb = payments.trial_balance(uow)
        assert tb.balanced, tb.as_json()
        for card in cards:
            view = payments.wallet(uow, card_no=card)
            assert view.balance_fen == expected[card] and view.balance_fen >= 0
