"""A hypothesis state machine drives the payment use cases against a simple in-memory model:
top-ups, charges (with reimbursement and medical aid), refunds, deposit holds, day closes and
the payouts of their batch lines. After every step the wallets, the held amounts, the funds and
what each payer still owes each institution (its clearing accounts) equal the model's, every
transaction's postings sum to zero, no wallet is below zero, and the trial balance holds.
Runs on SQLite and PostgreSQL, each example inside a savepoint that is rolled back."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import func, select

from tests.integration.payments.builders import make_coverage, make_patient, make_region
from tests.integration.payments.conftest import CardDesk
from yilian import payments
from yilian.db import UnitOfWork
from yilian.kernel import clock
from yilian.payments import tables as t
from yilian.payments.model import PaymentError

CATEGORIES = ["drug", "exam", "lab", "canteen", "parking", "bed"]


@pytest.fixture
def pinned() -> Iterator[list[dt.datetime]]:
    now = [dt.datetime(2026, 3, 1, 2, 0, tzinfo=dt.UTC)]
    clock.set_clock(lambda: now[0])
    yield now
    clock.set_clock(None)


def test_ledger_matches_the_model(uow: UnitOfWork, desk: CardDesk, pinned: list[dt.datetime]) -> None:
    region = make_region(uow)
    schemes = [(), ("ncms",), ("ncms", "medical-aid"), ("urban-employee",)]
    cards = []
    for n, owned in enumerate(schemes):
        patient = make_patient(uow, given=f"测{n}")
        for scheme in owned:
            make_coverage(
                uow,
                patient_id=patient,
                payor_org=region.aid_fund if scheme == "medical-aid" else region.insurer,
                scheme=scheme,
            )
        cards.append(desk.issue(uow, patient))
    places = [region.city_hospital, region.county_hospital, region.township_centre, region.out_of_region]
    conn = uow.conn

    class Payments(RuleBasedStateMachine):
        charges = Bundle("charges")
        holds = Bundle("holds")
        unpaid = Bundle("unpaid")  # closed days' batch lines not paid yet

        def __init__(self) -> None:
            super().__init__()
            self.savepoint = conn.begin_nested()
            self.wallet = dict.fromkeys(cards, 0)
            self.held = dict.fromkeys(cards, 0)
            self.funds: dict[str, int] = {}
            self.owed: dict[str, int] = {}  # clearing account → what its payer still owes
            self.left: dict[str, tuple[str, int]] = {}  # charge → (card, refundable)
            self.hold_of: dict[str, tuple[str, int]] = {}
            self.expires: dict[str, dt.datetime] = {}
            self.start = pinned[0]

        def teardown(self) -> None:
            self.savepoint.rollback()
            pinned[0] = self.start

        @rule(card=st.sampled_from(cards), amount=st.integers(1, 500_000))
        def top_up(self, card: str, amount: int) -> None:
            payments.top_up(uow, card_no=card, amount_fen=amount, channel="cash", org=region.city_hospital)
            self.wallet[card] += amount

        @rule(
            target=charges,
            card=st.sampled_from(cards),
            org=st.sampled_from(places),
            setting=st.sampled_from(["outpatient", "inpatient"]),
            lines=st.lists(
                st.tuples(st.sampled_from(CATEGORIES), st.integers(1, 80_000), st.integers(1, 3)),
                min_size=1,
                max_size=4,
            ),
            major=st.booleans(),
        )
        def charge(
            self, card: str, org: str, setting: str, lines: list[tuple[str, int, int]], major: bool
        ) -> str:
            items = [payments.Item(f"X-{c}", c, c, price, qty) for c, price, qty in lines]
            try:
                with conn.begin_nested():
                    done = payments.charge(
                        uow,
                        card_no=card,
                        org=org,
                        department="dept",
                        items=items,
                        setting=setting,
                        diagnoses=["C34.9"] if major else [],
                    )
            except PaymentError as err:
                assert err.reason == "insufficient-balance"
                assert self.wallet[card] - self.held[card] < sum(i.amount_fen for i in items)
                return "refused"
            s = done.shares
            assert (
                s.insurer_fen + s.aid_fen + s.self_pay_fen == s.total_fen == sum(i.amount_fen for i in items)
            )
            assert s.self_pay_fen <= self.wallet[card] - self.held[card]
            self.wallet[card] -= s.self_pay_fen
            for account, share in ((s.insurer_policy, s.insurer_fen), (s.aid_policy, s.aid_fen)):
                if account:
                    fund = payments.get_charge(uow, charge_id=done.charge_id)
                    name = fund.insurer_account if account == s.insurer_policy else fund.aid_account
                    self.funds[name] = self.funds.get(name, 0) - share
            self.left[done.charge_id] = (card, s.total_fen)
            return done.charge_id

        @rule(charge_id=charges, data=st.data())
        def refund(self, charge_id: str, data: st.DataObject) -> None:
            if charge_id not in self.left or self.left[charge_id][1] == 0:
                return
            card, left = self.left[charge_id]
            amount = data.draw(st.integers(1, left))
            done = payments.refund(uow, charge_id=charge_id, amount_fen=amount, reason="test")
            assert done.insurer_fen + done.aid_fen + done.self_pay_fen == amount
            self.wallet[card] += done.self_pay_fen
            row = payments.get_charge(uow, charge_id=charge_id)
            if done.insurer_fen:
                self.funds[row.insurer_account] += done.insurer_fen
            if done.aid_fen:
                self.funds[row.aid_account] += done.aid_fen
            self.left[charge_id] = (card, left - amount)

        @rule(
            target=holds,
            card=st.sampled_from(cards),
            amount=st.integers(1, 300_000),
            days=st.sampled_from([1, 2, 30]),
        )
        def hold(self, card: str, amount: int, days: int) -> str:
            try:
                with conn.begin_nested():
                    view = payments.hold_deposit(
                        uow,
                        card_no=card,
                        org=region.county_hospital,
                        department="ward",
                        amount_fen=amount,
                        expires_in_s=days * 86_400 - 60,
                    )
            except PaymentError as err:
                assert err.reason == "insufficient-balance" and self.wallet[card] - self.held[card] < amount
                return "refused"
            self.held[card] += amount
            self.hold_of[view.hold_id] = (card, amount)
            self.expires[view.hold_id] = pinned[0] + dt.timedelta(days=days, seconds=-60)
            return view.hold_id

        def _expired(self, hold_id: str) -> bool:
            return pinned[0] >= self.expires[hold_id]

        @rule(hold_id=consumes(holds), data=st.data())
        def post(self, hold_id: str, data: st.DataObject) -> None:
            if hold_id not in self.hold_of:
                return
            card, amount = self.hold_of[hold_id]
            part = data.draw(st.integers(1, amount))
            if self._expired(hold_id):
                with pytest.raises(PaymentError) as err, conn.begin_nested():
                    payments.post_hold(uow, hold_id=hold_id, amount_fen=part)
                assert err.value.reason == "hold-expired"
                return
            del self.hold_of[hold_id]
            payments.post_hold(uow, hold_id=hold_id, amount_fen=part)
            self.held[card] -= amount
            self.wallet[card] -= part

        @rule(hold_id=consumes(holds))
        def void(self, hold_id: str) -> None:
            if hold_id not in self.hold_of:
                return
            card, amount = self.hold_of[hold_id]
            if self._expired(hold_id):
                with pytest.raises(PaymentError) as err, conn.begin_nested():
                    payments.void_hold(uow, hold_id=hold_id)
                assert err.value.reason == "hold-expired"
                return
            del self.hold_of[hold_id]
            payments.void_hold(uow, hold_id=hold_id)
            self.held[card] -= amount

        @rule(target=unpaid)
        def close_day(self) -> object:
            day = payments.model.business_date(pinned[0])
            pinned[0] += dt.timedelta(days=1)
            report = payments.close_day(uow, day=day, closed_by="test")
            payable = []
            for line in report["lines"]:
                account = f"clearing:{line['payer']}:{line['payee']}"
                self.owed[account] = self.owed.get(account, 0) + line["amount_fen"]
                if line["amount_fen"]:
                    payable.append((day, line["line_id"], account, line["amount_fen"]))
                else:
                    with pytest.raises(PaymentError, match="nothing to pay"):
                        payments.record_payout(
                            uow, day=day, line_id=line["line_id"], reference="T", paid_by="test"
                        )
            # The close released every hold past its expiry.
            for hold_id in [h for h in self.hold_of if self._expired(h)]:
                card, amount = self.hold_of.pop(hold_id)
                self.held[card] -= amount
                assert payments.get_hold(uow, hold_id=hold_id).status == "expired"
            assert payments.day_report(uow, day=day)["reconciliation"]["reconciled"]
            with pytest.raises(PaymentError):
                payments.close_day(uow, day=day, closed_by="test")
            assert report["status"] == "closed"
            return multiple(*payable)

        @rule(line=consumes(unpaid))
        def payout(self, line: tuple[dt.date, int, str, int]) -> None:
            day, line_id, account, amount = line
            paid = payments.record_payout(
                uow, day=day, line_id=line_id, reference=f"T-{line_id}", paid_by="test"
            )
            assert paid.amount_fen == amount
            self.owed[account] -= amount
            with pytest.raises(PaymentError, match="already paid"):
                payments.record_payout(uow, day=day, line_id=line_id, reference="again", paid_by="test")

        @invariant()
        def books_agree(self) -> None:
            for card in cards:
                view = payments.wallet(uow, card_no=card)
                assert (view.balance_fen, view.held_fen) == (self.wallet[card], self.held[card])
                assert view.available_fen >= 0
            tb = payments.trial_balance(uow)
            assert tb.balanced, tb.as_json()
            balances = {a["account"]: a["balance_fen"] for a in tb.accounts}
            for fund, expected in self.funds.items():
                assert balances.get(fund, 0) == expected
            for account, expected in self.owed.items():
                assert balances.get(account, 0) == expected, account
            p = t.posting
            unbalanced = conn.execute(
                select(p.c.txn_id).group_by(p.c.txn_id).having(func.sum(p.c.amount) != 0)
            ).all()
            assert unbalanced == []

    run_state_machine_as_test(
        Payments,
        settings=settings(
            max_examples=20, stateful_step_count=30, deadline=None, suppress_health_check=list(HealthCheck)
        ),
    )
