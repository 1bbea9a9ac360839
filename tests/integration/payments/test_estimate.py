"""Pre-settlement (预结算), on both databases: the shares a charge would have, shown before it is
made — the same as the charge that follows, and nothing posted, locked or counted by it."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.integration.payments.builders import Region, make_coverage, make_patient, make_region
from tests.integration.payments.conftest import CardDesk
from tests.integration.payments.test_lost_card_and_scopes import resident_token
from tests.integration.payments.test_payment_api import DRUG as API_DRUG
from tests.integration.payments.test_payment_api import call
from tests.support.audit import audits
from tests.support.auth import bearer, system_token
from yilian import payments
from yilian.api import payment_replies as replies
from yilian.db import Database, UnitOfWork
from yilian.kernel.errors import Category, YilianError
from yilian.payments import tables as t
from yilian.payments.model import PaymentError

DRUG = payments.Item("YP-0001", "阿莫西林胶囊", "drug", 15_000, 2)  # ¥300
EXAM = payments.Item("JC-0101", "腹部彩超", "exam", 50_000, 1)  # ¥500
MEAL = payments.Item("ST-01", "职工食堂午餐", "canteen", 2_000, 1)  # outside every catalogue


def counts(uow: UnitOfWork) -> tuple[int, int, int]:
    """Postings, usage counters and their sum: what a charge changes and an estimate must not."""
    conn = uow.conn
    return (
        int(conn.execute(select(func.count()).select_from(t.posting)).scalar_one()),
        int(conn.execute(select(func.count()).select_from(t.usage)).scalar_one()),
        int(conn.execute(select(func.coalesce(func.sum(t.usage.c.amount_fen), 0))).scalar_one()),
    )


@pytest.fixture
def region(uow: UnitOfWork) -> Region:
    return make_region(uow)


def insured(uow: UnitOfWork, desk: CardDesk, region: Region, *schemes: str, top_up: int) -> str:
    patient = make_patient(uow)
    for scheme in schemes:
        payor = region.aid_fund if scheme == "medical-aid" else region.insurer
        make_coverage(uow, patient_id=patient, payor_org=payor, scheme=scheme)
    card = desk.issue(uow, patient)
    payments.top_up(uow, card_no=card, amount_fen=top_up, channel="cash", org=region.city_hospital)
    return card


@pytest.mark.parametrize("org", ["township_centre", "city_hospital"])
def test_the_estimate_is_what_the_charge_then_takes_and_changes_nothing(
    uow: UnitOfWork, desk: CardDesk, region: Region, pinned: list[dt.datetime], org: str
) -> None:
    card = insured(uow, desk, region, "ncms", "medical-aid", top_up=500_000)
    where = getattr(region, org)
    items = [DRUG, EXAM, MEAL]
    for _ in range(2):  # the second pair starts from the first charge's usage
        before = counts(uow)
        shown = payments.estimate(uow, card_no=card, org=where, department="clinic", items=items)
        assert counts(uow) == before, "an estimate posts and counts nothing"
        done = payments.charge(uow, card_no=card, org=where, department="clinic", items=items)
        want, got = shown.shares, done.shares
        assert (want.total_fen, want.insurer_fen, want.aid_fen, want.self_pay_fen) == (
            got.total_fen,
            got.insurer_fen,
            got.aid_fen,
            got.self_pay_fen,
        )
        assert [s.as_json() for s in want.steps] == [s.as_json() for s in got.steps]
        assert shown.as_json()["explanation"] == done.as_json()["explanation"]
        assert shown.as_json()["wallet_available_fen"] == done.wallet.balance_fen + got.self_pay_fen
    assert payments.trial_balance(uow).balanced


def test_an_empty_wallet_is_shown_not_refused(
    uow: UnitOfWork, desk: CardDesk, region: Region, pinned: list[dt.datetime]
) -> None:
    card = insured(uow, desk, region, top_up=1_000)
    shown = payments.estimate(uow, card_no=card, org=region.city_hospital, department="clinic", items=[DRUG])
    reply = shown.as_json()
    assert (reply["self_pay_fen"], reply["wallet_available_fen"], reply["wallet_covers"]) == (
        30_000,
        1_000,
        False,
    )
    with pytest.raises(PaymentError) as err:
        payments.charge(uow, card_no=card, org=region.city_hospital, department="clinic", items=[DRUG])
    assert err.value.reason == "insufficient-balance"


def test_an_estimate_is_refused_as_the_charge_would_be(
    uow: UnitOfWork, desk: CardDesk, region: Region, pinned: list[dt.datetime]
) -> None:
    card = insured(uow, desk, region, "ncms", top_up=100_000)
    desk.report_lost(uow, card)
    with pytest.raises(YilianError) as lost:
        payments.estimate(uow, card_no=card, org=region.city_hospital, department="clinic", items=[DRUG])
    assert getattr(lost.value, "reason", None) == "card-lost"
    desk.resume(uow, card)
    with pytest.raises(PaymentError) as empty:
        payments.estimate(uow, card_no=card, org=region.city_hospital, department="clinic", items=[])
    assert empty.value.reason == "no-items" and empty.value.category is Category.INVALID
    # After the policies' year, an enrolled resident: refused, with the patient's choice shown.
    pinned[0] = dt.datetime(2027, 1, 4, 2, 0, tzinfo=dt.UTC)
    patient = make_patient(uow)
    make_coverage(uow, patient_id=patient, payor_org=region.insurer, start="2027-01-01", end="2027-12-31")
    next_year = desk.issue(uow, patient)
    with pytest.raises(PaymentError) as none_in_force:
        payments.estimate(uow, card_no=next_year, org=region.city_hospital, department="clinic", items=[DRUG])
    assert none_in_force.value.reason == "no-policy-in-force"
    chosen = payments.estimate(
        uow, card_no=next_year, org=region.city_hospital, department="clinic", items=[DRUG], self_pay=True
    )
    assert chosen.as_json()["explanation"]["self_pay"] is True and chosen.shares.self_pay_fen == 30_000


def test_over_http_an_estimate_needs_no_key_and_is_audited_as_a_read_of_the_patient(
    app: Any, db: Database, desk: CardDesk
) -> None:
    with UnitOfWork(db, write=True) as uow:
        region = make_region(uow)
        card = insured(uow, desk, region, "ncms", top_up=100_000)
        patient = desk_patient(uow, card)
    his = bearer(
        system_token(
            db, scopes="system/Account.cru system/ChargeItem.cr", org_id=region.city_hospital, name="HIS"
        )
    )
    body = {"card_no": card, "org": region.city_hospital, "department": "pharmacy", "items": [API_DRUG]}
    shown = call(app, "POST", "/api/charge-estimates", headers=his, json=body)
    assert shown.status_code == 200, shown.text
    reply = replies.EstimateReply.model_validate(shown.json())
    assert (reply.total_fen, reply.insurer_fen, reply.self_pay_fen, reply.wallet_covers) == (
        30_000,
        0,
        30_000,
        True,
    )
    assert reply.explanation.insurer_policy == "ncms/330500/2026/v1"  # the ¥300 deductible takes it all
    # The same request with an Idempotency-Key changes nothing either; then the charge itself.
    again = call(app, "POST", "/api/charge-estimates", headers=his, key=uuid.uuid4().hex, json=body)
    assert again.json() == shown.json()
    made = call(app, "POST", "/api/charges", headers=his, key=uuid.uuid4().hex, json=body)
    assert made.status_code == 201 and made.json()["self_pay_fen"] == reply.self_pay_fen
    with UnitOfWork(db) as uow:
        posted_after_charge = counts(uow)[0]
    rows = [r for r in audits(db, "payment-estimate") if r.org_id == region.city_hospital]
    assert len(rows) == 2 and all(r.action == "E" and r.outcome == 0 for r in rows)
    assert all(r.patient_keys == (patient,) for r in rows)

    # Another institution's client, and the resident's own token, may not.
    other = bearer(
        system_token(
            db, scopes="system/Account.cru system/ChargeItem.cr", org_id=region.county_hospital, name="HIS 2"
        )
    )
    assert call(app, "POST", "/api/charge-estimates", headers=other, json=body).status_code == 403
    mine = resident_token(db, patient, scopes="patient/*.cruds")
    assert call(app, "POST", "/api/charge-estimates", headers=mine, json=body).status_code == 403
    before = len(audits(db, "payment-estimate"))
    for wrong in ({**body, "items": []}, {**body, "self_pay": "yes"}, {**body, "card_no": 7}):
        bad = call(app, "POST", "/api/charge-estimates", headers=his, json=wrong)
        assert bad.status_code == 400 and bad.headers["content-type"].startswith("application/problem+json")
    unknown = call(
        app, "POST", "/api/charge-estimates", headers=his, json={**body, "hold_id": "no-such-hold"}
    )
    assert unknown.status_code == 404 and unknown.json()["reason"] == "unknown-hold"
    with UnitOfWork(db) as uow:
        assert counts(uow)[0] == posted_after_charge
    # Each refusal is on record as a refused execute by the hospital.
    refused = audits(db, "payment-estimate")[before:]
    assert [(r.action, r.outcome, r.org_id) for r in refused] == [("E", 4, region.city_hospital)] * 4


def desk_patient(uow: UnitOfWork, card_no: str) -> str:
    from yilian import card

    return card.require_usable(uow, card_no).patient_id


def test_a_discharge_estimate_shows_what_the_deposit_pays_first(
    uow: UnitOfWork, desk: CardDesk, region: Region, pinned: list[dt.datetime]
) -> None:
    """出院预结算: an inpatient's bill, their ¥1,000 deposit paying the patient's part first."""
    card = insured(uow, desk, region, "ncms", top_up=150_000)
    deposit = payments.hold_deposit(
        uow, card_no=card, org=region.county_hospital, department="ward-3", amount_fen=100_000
    )
    bill = [
        EXAM,
        payments.Item("CW-01", "床位费", "bed", 8_000, 10),
        payments.Item("ZL-01", "换药", "treatment", 20_000, 3),
    ]
    args: dict[str, Any] = {
        "card_no": card,
        "org": region.county_hospital,
        "department": "ward-3",
        "items": bill,
        "setting": "inpatient",
        "hold_id": deposit.hold_id,
    }
    before = counts(uow)
    shown = payments.estimate(uow, **args).as_json()
    assert counts(uow) == before
    assert payments.get_hold(uow, hold_id=deposit.hold_id).status == "held"  # untouched
    # County hospital, inpatient NCMS: ¥1,900 less the ¥500 deductible, 75% of the rest = ¥1,050.
    assert (shown["total_fen"], shown["insurer_fen"], shown["self_pay_fen"]) == (190_000, 105_000, 85_000)
    assert shown["from_deposit_fen"] == 85_000  # all of the patient's part, from the deposit
    # ¥500 of the wallet is free (¥1,500 less the ¥1,000 held); the deposit is released for the bill.
    assert shown["wallet_available_fen"] == 50_000 and shown["wallet_covers"] is True
    share = shown["self_pay_fen"]
    done = payments.charge(uow, **args)
    assert done.shares.self_pay_fen == share and done.shares.insurer_fen == shown["insurer_fen"]
    assert done.wallet.balance_fen == 150_000 - share
    # Someone else's deposit, or one already settled, is refused as the charge would be.
    with pytest.raises(PaymentError) as finished:
        payments.estimate(uow, **args)
    assert finished.value.reason == "hold-finished"
    second = payments.hold_deposit(
        uow, card_no=card, org=region.county_hospital, department="ward-3", amount_fen=10_000
    )
    other = insured(uow, desk, region, top_up=10_000)
    with pytest.raises(PaymentError) as mismatch:
        payments.estimate(uow, **{**args, "card_no": other, "hold_id": second.hold_id})
    assert mismatch.value.reason == "hold-mismatch"
