"""Paying a closed day's batch lines (清算划拨): each line once, its amount off the payer's
clearing account for the institution, the day's report saying what is paid and what is still
owed — over HTTP, and under concurrent attempts on both databases."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

from tests.integration.payments.builders import Region
from tests.integration.payments.conftest import CardDesk
from tests.integration.payments.test_payment_api import DRUG, call, key, new_card
from tests.support.auth import bearer, system_token
from yilian import payments
from yilian.db import Database, UnitOfWork
from yilian.kernel import clock
from yilian.payments.model import PaymentError


def _day_of_charges(app: Any, db: Database, desk: CardDesk, region: Region) -> None:
    """A plain card and an insured one pay at the city hospital: the day has an issuer line and
    a fund line for it."""
    hospital = bearer(
        system_token(
            db, scopes="system/Account.cru system/ChargeItem.cr", org_id=region.city_hospital, name="HIS"
        )
    )
    for schemes in ((), ("ncms",)):
        card = new_card(db, desk, region, *schemes)
        top = {"amount_fen": 5_000_000, "channel": "cash", "org": region.city_hospital}
        assert (
            call(app, "POST", f"/api/cards/{card}/top-ups", headers=hospital, key=key(), json=top).status_code
            == 201
        )
        charge = {
            "card_no": card,
            "org": region.city_hospital,
            "department": "clinic",
            "items": [{**DRUG, "quantity": 40}],
        }
        paid = call(app, "POST", "/api/charges", headers=hospital, key=key(), json=charge)
        assert paid.status_code == 201, paid.text


def _balances(app: Any, operator: dict[str, str]) -> dict[str, int]:
    tb = call(app, "GET", "/api/ledger/trial-balance", headers=operator).json()
    assert tb["total_fen"] == 0
    return {a["account"]: a["balance_fen"] for a in tb["accounts"]}


def test_a_closed_days_lines_are_paid_once_each(
    app: Any, db: Database, desk: CardDesk, region: Region, pinned: list[dt.datetime]
) -> None:
    _day_of_charges(app, db, desk, region)
    day = "2026-06-15"
    pinned[0] = dt.datetime(2026, 6, 16, 2, 0, tzinfo=dt.UTC)
    operator = bearer(system_token(db, scopes="system/*.cruds", name="clearing operator"))
    early = call(
        app,
        "POST",
        f"/api/settlement/days/{day}/payouts",
        headers=operator,
        key=key(),
        json={"line_id": 1, "reference": "BOC-1"},
    )
    assert early.status_code == 409 and early.json()["reason"] == "day-not-closed", early.text
    assert (
        call(app, "POST", f"/api/settlement/days/{day}/close", headers=operator, key=key()).status_code == 201
    )

    shown = call(app, "GET", f"/api/settlement/days/{day}", headers=operator).json()
    lines = {line["payer"]: line for line in shown["lines"] if line["payee"] == region.city_hospital}
    issuer, fund = lines["card-issuer"], lines["fund:ncms:330500"]
    assert issuer["payout"] is None and fund["payout"] is None
    assert shown["outstanding_fen"] == sum(line["amount_fen"] for line in shown["lines"]) > 0
    before = _balances(app, operator)
    assert before[f"clearing:card-issuer:{region.city_hospital}"] == issuer["amount_fen"]

    k = key()
    body = {"line_id": issuer["line_id"], "reference": "BOC-20260616-0001"}
    paid = call(app, "POST", f"/api/settlement/days/{day}/payouts", headers=operator, key=k, json=body)
    assert paid.status_code == 201, paid.text
    got = paid.json()
    assert (got["payer"], got["payee"], got["amount_fen"]) == (
        "card-issuer",
        region.city_hospital,
        issuer["amount_fen"],
    )
    # A retry of the same call is the same reply and posts nothing; a second payout is refused.
    again = call(app, "POST", f"/api/settlement/days/{day}/payouts", headers=operator, key=k, json=body)
    assert again.content == paid.content
    twice = call(app, "POST", f"/api/settlement/days/{day}/payouts", headers=operator, key=key(), json=body)
    assert twice.status_code == 409 and twice.json()["reason"] == "line-paid"
    assert "BOC-20260616-0001" in twice.json()["detail"]

    after = _balances(app, operator)
    assert after[f"clearing:card-issuer:{region.city_hospital}"] == 0
    assert after["channel:transfer"] == before.get("channel:transfer", 0) + issuer["amount_fen"]
    assert after[f"clearing:fund:ncms:330500:{region.city_hospital}"] == fund["amount_fen"]

    shown = call(app, "GET", f"/api/settlement/days/{day}", headers=operator).json()
    mine = next(line for line in shown["lines"] if line["line_id"] == issuer["line_id"])
    assert mine["payout"]["reference"] == "BOC-20260616-0001" and mine["payout"]["txn_id"] == got["txn_id"]
    assert shown["outstanding_fen"] == sum(
        line["amount_fen"] for line in shown["lines"] if line["line_id"] != issuer["line_id"]
    )
    assert shown["reconciliation"]["reconciled"], shown["reconciliation"]

    # Refusals, each with its own reason and nothing posted.
    for payload, status, reason in (
        ({"line_id": 987_654, "reference": "X"}, 404, "unknown-line"),
        ({"line_id": fund["line_id"], "reference": "   "}, 400, "bad-reference"),
    ):
        r = call(
            app, "POST", f"/api/settlement/days/{day}/payouts", headers=operator, key=key(), json=payload
        )
        assert (r.status_code, r.json()["reason"]) == (status, reason), r.text
    hospital = bearer(system_token(db, scopes="system/*.cruds", org_id=region.city_hospital, name="HIS 2"))
    denied = call(
        app,
        "POST",
        f"/api/settlement/days/{day}/payouts",
        headers=hospital,
        key=key(),
        json={"line_id": fund["line_id"], "reference": "self-pay"},
    )
    assert denied.status_code == 403
    assert _balances(app, operator) == after


def test_concurrent_payouts_of_one_line_post_once(
    app: Any, db: Database, desk: CardDesk, region: Region, pinned: list[dt.datetime]
) -> None:
    pinned[0] = dt.datetime(2026, 7, 1, 2, 0, tzinfo=dt.UTC)
    _day_of_charges(app, db, desk, region)
    pinned[0] = dt.datetime(2026, 7, 2, 2, 0, tzinfo=dt.UTC)
    with UnitOfWork(db, write=True) as uow:
        report = payments.close_day(uow, day=dt.date(2026, 7, 1), closed_by="test")
        uow.commit()
    line = next(x for x in report["lines"] if x["payer"] == "card-issuer")
    now = clock.now()
    outcomes: list[str] = []
    barrier = threading.Barrier(4)

    def pay(n: int) -> None:
        clock.set_clock(lambda: now)
        barrier.wait(timeout=30)
        try:
            with UnitOfWork(db, write=True) as uow:
                payments.record_payout(
                    uow, day=dt.date(2026, 7, 1), line_id=line["line_id"], reference=f"T-{n}", paid_by="test"
                )
                uow.commit()
            outcomes.append("paid")
        except PaymentError as err:
            outcomes.append(err.reason)

    threads = [threading.Thread(target=pay, args=(n,)) for n in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60)
    assert sorted(outcomes) == ["line-paid", "line-paid", "line-paid", "paid"]
    with UnitOfWork(db) as uow:
        shown = payments.day_report(uow, day=dt.date(2026, 7, 1))
        tb = payments.trial_balance(uow)
    assert next(x for x in shown["lines"] if x["line_id"] == line["line_id"])["payout"] is not None
    balances = {a["account"]: a["balance_fen"] for a in tb.accounts}
    assert tb.balanced and balances[f"clearing:card-issuer:{region.city_hospital}"] == 0
