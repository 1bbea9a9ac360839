"""Closing a business day over HTTP. A module of its own: closing today's day (with the clock
moved to tomorrow) would refuse every later posting of the day in a shared database."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.payments.builders import Region
from tests.integration.payments.conftest import CardDesk
from tests.integration.payments.conftest import today as business_day
from tests.integration.payments.test_payment_api import DRUG, call, key, new_card
from tests.support.auth import bearer, system_token
from yilian.db import Database
from yilian.kernel import clock


@pytest.fixture(scope="module")
def hospital(db: Database, region: Region) -> dict[str, str]:
    return bearer(
        system_token(
            db, scopes="system/Account.cru system/ChargeItem.cr", org_id=region.city_hospital, name="HIS"
        )
    )


@pytest.fixture
def tomorrow_clock() -> Iterator[list[bool]]:
    """The clock until the test flips it, then the same moment tomorrow."""
    flipped = [False]
    # From the policy year's clock (conftest), not the calendar's: the charges here are insured.
    base, started = clock.now(), time.monotonic()
    clock.set_clock(
        lambda: base + dt.timedelta(seconds=time.monotonic() - started, days=1 if flipped[0] else 0)
    )
    yield flipped
    clock.set_clock(None)


def test_close_day_over_http(
    app: Any,
    db: Database,
    desk: CardDesk,
    region: Region,
    hospital: dict[str, str],
    tomorrow_clock: list[bool],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    card = new_card(db, desk, region)
    top = {"amount_fen": 100_000, "channel": "cash", "org": region.city_hospital}
    call(app, "POST", f"/api/cards/{card}/top-ups", headers=hospital, key=key(), json=top)
    charge = {"card_no": card, "org": region.city_hospital, "department": "clinic", "items": [DRUG]}
    assert call(app, "POST", "/api/charges", headers=hospital, key=key(), json=charge).status_code == 201
    insured = new_card(db, desk, region, "ncms")  # the fund pays a share of this one's charges
    call(
        app,
        "POST",
        f"/api/cards/{insured}/top-ups",
        headers=hospital,
        key=key(),
        json={**top, "amount_fen": 5_000_000},
    )
    big = {**charge, "card_no": insured, "items": [{**DRUG, "quantity": 40}]}
    paid = call(app, "POST", "/api/charges", headers=hospital, key=key(), json=big)
    assert paid.status_code == 201 and paid.json()["insurer_fen"] > 0, paid.text
    today = business_day()  # yesterday, for the platform, once the clock is flipped
    tomorrow_clock[0] = True
    # Tokens expire by the clock: the operator's is issued "tomorrow".
    operator = bearer(system_token(db, scopes="system/*.cruds", name="tomorrow's operator"))
    k = key()
    first = call(app, "POST", f"/api/settlement/days/{today}/close", headers=operator, key=k)
    assert first.status_code == 201, first.text
    replay = call(app, "POST", f"/api/settlement/days/{today}/close", headers=operator, key=k)
    assert replay.content == first.content
    twice = call(app, "POST", f"/api/settlement/days/{today}/close", headers=operator, key=key())
    assert twice.status_code == 409 and twice.json()["reason"] == "day-closed"
    shown = call(app, "GET", f"/api/settlement/days/{today}?detail=1", headers=operator).json()
    assert shown["status"] == "closed" and shown["reconciliation"]["reconciled"], shown
    issuer = [
        line
        for line in shown["lines"]
        if line["payer"] == "card-issuer" and line["payee"] == region.city_hospital
    ]
    assert issuer and issuer[0]["amount_fen"] > 0
    # The trial balance shows what each payer owes the hospital for the closed day, and the
    # hospital's point holds nothing still to clear.
    accounts = {
        a["account"]: a
        for a in call(app, "GET", "/api/ledger/trial-balance", headers=operator).json()["accounts"]
    }
    owed = {
        line["payer"]: line["amount_fen"] for line in shown["lines"] if line["payee"] == region.city_hospital
    }
    for payer, amount in owed.items():
        account = accounts[f"clearing:{payer}:{region.city_hospital}"]
        assert (account["kind"], account["owner"], account["balance_fen"]) == ("clearing", payer, amount)
    assert accounts[f"org:{region.city_hospital}:clinic"]["balance_fen"] == 0
    # The insurer, once named its fund's administrator, reads the closed day's fund lines,
    # reconciled on their own.
    monkeypatch.setenv("YILIAN_FUND_ADMINISTRATORS", f"fund:ncms:330500={region.insurer}")
    insurer = bearer(
        system_token(db, scopes="system/PaymentReconciliation.r", org_id=region.insurer, name="insurer")
    )
    mine = call(app, "GET", f"/api/settlement/days/{today}?detail=1", headers=insurer).json()
    fund = [line for line in shown["lines"] if line["payer"] == "fund:ncms:330500"]
    assert fund and mine["lines"] == fund and mine["status"] == "closed"
    assert mine["reconciliation"]["reconciled"], mine["reconciliation"]
    assert mine["transactions"] == sum(line["txn_count"] for line in fund)
