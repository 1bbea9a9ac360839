"""The payment use cases on both databases: every operation balanced, refusals post nothing."""

from __future__ import annotations

import datetime as dt

import orjson
import pytest
from sqlalchemy import func, select, update

from tests.integration.payments.builders import Region, make_coverage, make_patient, make_region
from tests.integration.payments.conftest import CardDesk
from yilian import payments
from yilian.db import UnitOfWork
from yilian.kernel.errors import Category, YilianError
from yilian.payments import tables as t
from yilian.payments.model import PaymentError

DRUG = payments.Item("YP-0001", "阿莫西林胶囊", "drug", 15_000, 2)
EXAM = payments.Item("JC-0101", "腹部彩超", "exam", 50_000, 1)
MEAL = payments.Item("ST-01", "职工食堂午餐", "canteen", 2_000, 1)


def postings(uow: UnitOfWork) -> int:
    return int(uow.conn.execute(select(func.count()).select_from(t.posting)).scalar_one())


def balanced(uow: UnitOfWork) -> None:
    tb = payments.trial_balance(uow)
    assert tb.balanced, tb.as_json()


@pytest.fixture
def region(uow: UnitOfWork) -> Region:
    return make_region(uow)


def resident(uow: UnitOfWork, desk: CardDesk, region: Region, *schemes: str, top_up: int = 0) -> str:
    patient = make_patient(uow)
    for scheme in schemes:
        payor = region.aid_fund if scheme == "medical-aid" else region.insurer
        make_coverage(uow, patient_id=patient, payor_org=payor, scheme=scheme)
    card = desk.issue(uow, patient)
    if top_up:
        payments.top_up(uow, card_no=card, amount_fen=top_up, channel="cash", org=region.city_hospital)
    return card


def test_top_up_credits_the_wallet_from_the_channel(
    uow: UnitOfWork, desk: CardDesk, region: Region, pinned: list[dt.datetime]
) -> None:
    card = resident(uow, desk, region)
    done = payments.top_up(uow, card_no=card, amount_fen=10_000, channel="wechat", org=region.township_centre)
    assert done.wallet.balance_fen == 10_000 and done.wallet.available_fen == 10_000
    assert payments.wallet(uow, card_no=card).balance_fen == 10_000
    tb = payments.trial_balance(uow)
    assert tb.balanced and tb.debits_fen == tb.credits_fen == 10_000
    accounts = {a["account"]: a["balance_fen"] for a in tb.accounts}
    assert accounts["channel:wechat"] == -10_000


@pytest.mark.parametrize("amount", [0, -1, True, 10**16])
def test_bad_amounts_are_refused(
    uow: UnitOfWork, desk: CardDesk, region: Region, amount: int, pinned: list[dt.datetime]
) -> None:
    card = resident(uow, desk, region)
    with pytest.raises(PaymentError) as err:
        payments.top_up(uow, card_no=card, amount_fen=amount, channel="cash", org=region.city_hospital)
    assert err.value.reason == "bad-amount" and err.value.category is Category.INVALID
    assert postings(uow) == 0


def test_uninsured_charge_is_all_self_pay(
    uow: UnitOfWork, desk: CardDesk, region: Region, pinned: list[dt.datetime]
) -> None:
    card = resident(uow, desk, region, top_up=100_000)
    result = payments.charge(
        uow, card_no=card, org=region.city_hospital, department="internal-medicine", items=[DRUG, MEAL]
    )
    assert (result.shares.total_fen, result.shares.insurer_fen, result.shares.self_pay_fen) == (
        32_000,
        0,
        32_000,
    )
    assert result.wallet.balance_fen == 68_000
    balanced(uow)


def test_insufficient_balance_posts_nothing(
    uow: UnitOfWork, desk: CardDesk, region: Region, pinned: list[dt.datetime]
) -> None:
    card = resident(uow, desk, region, top_up=1_000)
    before = postings(uow)
    with pytest.raises(PaymentError) as err:
        payments.charge(uow, card_no=card, org=region.city_hospital, department="pharmacy", items=[DRUG])
    assert err.value.reason == "insufficient-balance" and err.value.category is Category.CONFLICT
    # The unit of work would roll back; within it nothing was written either.
    assert postings(uow) == before
    assert payments.wallet(uow, card_no=card).balance_fen == 1_000


def test_ncms_outpatient_at_city_hospital(
    uow: UnitOfWork, desk: CardDesk, region: Region, pinned: list[dt.datetime]
) -> None:
    card = resident(uow, desk, region, "ncms", top_up=200_000)
    first = payments.charge(
        uow, card_no=card, org=region.city_hospital, department="clinic", items=[DRUG, EXAM, MEAL]
    )
    s = first.shares
    # eligible 80 000 (the meal is outside the catalogue); deductible ¥300 met; 40% of 50 000.
    assert (s.total_fen, s.insurer_fen, s.aid_fen, s.self_pay_fen) == (82_000, 20_000, 0, 62_000)
    assert s.deductible_fen == 30_000
    # The annual deductible is met: the next charge is reimbursed from the first fen.
    second = payments.charge(uow, card_no=card, org=region.city_hospital, department="clinic", items=[EXAM])
    assert (second.shares.insurer_fen, second.shares.self_pay_fen) == (20_000, 30_000)
    assert payments.wallet(uow, card_no=card).balance_fen == 200_000 - 62_000 - 30_000
    accounts = {a["account"]: a["balance_fen"] for a in payments.trial_balance(uow).accounts}
    assert accounts["fund:ncms:330500"] == -40_000
    assert accounts[f"org:{region.city_hospital}:clinic"] == 132_000
    balanced(uow)


def test_medical_aid_pays_a_second_layer(
    uow: UnitOfWork, desk: CardDesk, region: Region, pinned: list[dt.datetime]
) -> None:
    card = resident(uow, desk, region, "ncms", "medical-aid", top_up=100_000)
    result = payments.charge(uow, card_no=card, org=region.township_centre, department="clinic", items=[DRUG])
    s = result.shares
    # township: no deductible, 60% → 18 000; aid 50% of the remaining 12 000 → 6 000; patient 6 000.
    assert (s.insurer_fen, s.aid_fen, s.self_pay_fen) == (18_000, 6_000, 6_000)
    assert s.aid_policy == "medical-aid/330500/2026/v1"
    balanced(uow)


def test_lost_or_unknown_card_is_refused(
    uow: UnitOfWork, desk: CardDesk, region: Region, pinned: list[dt.datetime]
) -> None:
    card = resident(uow, desk, region, top_up=50_000)
    desk.report_lost(uow, card)
    with pytest.raises(YilianError) as err:
        payments.charge(uow, card_no=card, org=region.city_hospital, department="clinic", items=[DRUG])
    assert err.value.category is Category.CONFLICT
    with pytest.raises(YilianError) as unknown:
        payments.top_up(
            uow, card_no=desk.unknown_number(), amount_fen=100, channel="cash", org=region.city_hospital
        )
    assert unknown.value.category is Category.NOT_FOUND


def test_unknown_institution_is_refused(
    uow: UnitOfWork, desk: CardDesk, region: Region, pinned: list[dt.datetime]
) -> None:
    card = resident(uow, desk, region, top_up=50_000)
    with pytest.raises(PaymentError) as err:
        payments.charge(uow, card_no=card, org="no-such-org", department="clinic", items=[DRUG])
    assert err.value.reason == "unknown-institution"


def test_refunds_in_pieces_return_every_share_exactly(
    uow: UnitOfWork, desk: CardDesk, region: Region, pinned: list[dt.datetime]
) -> None:
    card = resident(uow, desk, region, "ncms", "medical-aid", top_up=100_000)
    paid = payments.charge(uow, card_no=card, org=region.township_centre, department="clinic", items=[DRUG])
    first = payments.refund(uow, charge_id=paid.charge_id, amount_fen=10_001, reason="one box returned")
    assert first.insurer_fen + first.aid_fen + first.self_pay_fen == 10_001
    assert first.refundable_fen == 30_000 - 10_001
    with pytest.raises(PaymentError) as err:
        payments.refund(uow, charge_id=paid.charge_id, amount_fen=30_000, reason="too much")
    assert err.value.reason == "refund-exceeds-charge"
    rest = payments.refund(uow, charge_id=paid.charge_id, amount_fen=first.refundable_fen, reason="the rest")
    assert (
        first.insurer_fen + rest.insurer_fen,
        first.aid_fen + rest.aid_fen,
        first.self_pay_fen + rest.self_pay_fen,
    ) == (
        18_000,
        6_000,
        6_000,
    )
    assert payments.wallet(uow, card_no=card).balance_fen == 100_000
    accounts = {a["account"]: a["balance_fen"] for a in payments.trial_balance(uow).accounts}
    assert accounts["fund:ncms:330500"] == 0 and accounts["aid:medical-aid:330500"] == 0
    balanced(uow)


def test_full_refund_restores_the_deductible_and_cap(
    uow: UnitOfWork, desk: CardDesk, region: Region, pinned: list[dt.datetime]
) -> None:
    card = resident(uow, desk, region, "ncms", top_up=300_000)
    paid = payments.charge(uow, card_no=card, org=region.city_hospital, department="clinic", items=[EXAM])
    assert paid.shares.deductible_fen == 30_000
    payments.refund(uow, charge_id=paid.charge_id, amount_fen=50_000, reason="exam cancelled")
    again = payments.charge(uow, card_no=card, org=region.city_hospital, department="clinic", items=[EXAM])
    assert again.shares.deductible_fen == 30_000 and again.shares.insurer_fen == 8_000


def test_deposit_hold_post_void_expire(
    uow: UnitOfWork, desk: CardDesk, region: Region, pinned: list[dt.datetime]
) -> None:
    card = resident(uow, desk, region, top_up=100_000)
    held = payments.hold_deposit(
        uow, card_no=card, org=region.county_hospital, department="ward-3", amount_fen=80_000
    )
    view = payments.wallet(uow, card_no=card)
    assert (view.balance_fen, view.held_fen, view.available_fen) == (100_000, 80_000, 20_000)
    with pytest.raises(PaymentError) as err:  # the deposit cannot be spent at the canteen
        payments.charge(uow, card_no=card, org=region.county_hospital, department="canteen", items=[EXAM])
    assert err.value.reason == "insufficient-balance"
    with pytest.raises(PaymentError) as over:
        payments.post_hold(uow, hold_id=held.hold_id, amount_fen=80_001)
    assert over.value.reason == "post-exceeds-hold"
    done = payments.post_hold(uow, hold_id=held.hold_id, amount_fen=65_000)
    assert done.status == "posted" and done.posted_fen == 65_000
    view = payments.wallet(uow, card_no=card)
    assert (view.balance_fen, view.held_fen) == (35_000, 0)
    for again in (
        lambda: payments.post_hold(uow, hold_id=held.hold_id, amount_fen=1),
        lambda: payments.void_hold(uow, hold_id=held.hold_id),
    ):
        with pytest.raises(PaymentError) as twice:
            again()
        assert twice.value.reason == "hold-finished"
    second = payments.hold_deposit(
        uow, card_no=card, org=region.county_hospital, department="ward-3", amount_fen=30_000
    )
    assert payments.void_hold(uow, hold_id=second.hold_id).status == "voided"
    third = payments.hold_deposit(
        uow,
        card_no=card,
        org=region.county_hospital,
        department="ward-3",
        amount_fen=30_000,
        expires_in_s=3600,
    )
    pinned[0] += dt.timedelta(hours=2)
    with pytest.raises(PaymentError) as expired:
        payments.post_hold(uow, hold_id=third.hold_id, amount_fen=100)
    assert expired.value.reason == "hold-expired"
    assert payments.expire_holds(uow) == 1
    assert payments.get_hold(uow, hold_id=third.hold_id).status == "expired"
    assert payments.wallet(uow, card_no=card).held_fen == 0
    balanced(uow)


def test_statement_walks_back_from_the_balance(
    uow: UnitOfWork, desk: CardDesk, region: Region, pinned: list[dt.datetime]
) -> None:
    card = resident(uow, desk, region, top_up=10_000)
    payments.top_up(uow, card_no=card, amount_fen=5_000, channel="alipay", org=region.city_hospital)
    payments.charge(
        uow,
        card_no=card,
        org=region.city_hospital,
        department="parking",
        items=[payments.Item("P-1", "停车", "parking", 500, 3)],
    )
    view, lines = payments.statement(uow, card_no=card)
    assert view.balance_fen == 13_500
    assert [(line.kind, line.amount_fen, line.balance_after_fen) for line in lines] == [
        ("charge", -1_500, 13_500),
        ("top-up", 5_000, 15_000),
        ("top-up", 10_000, 10_000),
    ]


def test_close_day_clears_positions_once(
    uow: UnitOfWork, desk: CardDesk, region: Region, pinned: list[dt.datetime]
) -> None:
    card = resident(uow, desk, region, "ncms", top_up=200_000)
    paid = payments.charge(
        uow, card_no=card, org=region.city_hospital, department="clinic", items=[DRUG, EXAM, MEAL]
    )
    payments.charge(uow, card_no=card, org=region.township_centre, department="clinic", items=[DRUG])
    payments.refund(uow, charge_id=paid.charge_id, amount_fen=2_000, reason="meal returned")
    today = dt.date(2026, 6, 15)
    with pytest.raises(PaymentError) as early:
        payments.close_day(uow, day=today, closed_by="ops")
    assert early.value.reason == "day-not-over"
    pinned[0] += dt.timedelta(days=1)
    report = payments.close_day(uow, day=today, closed_by="ops")
    lines = {(line["payer"], line["payee"]): line["amount_fen"] for line in report["lines"]}
    refund_parts = payments.get_charge(uow, charge_id=paid.charge_id)
    assert lines[("fund:ncms:330500", region.city_hospital)] == 20_000 - refund_parts.refunded_insurer_fen
    assert lines[("card-issuer", region.city_hospital)] == 62_000 - refund_parts.refunded_self_fen
    assert lines[("fund:ncms:330500", region.township_centre)] == 18_000
    assert lines[("card-issuer", region.township_centre)] == 12_000
    assert report["transactions"] == 4  # one top-up, two charges, one refund
    shown = payments.day_report(uow, day=today)
    assert shown["status"] == "closed" and shown["reconciliation"]["reconciled"], shown
    with pytest.raises(PaymentError) as twice:
        payments.close_day(uow, day=today, closed_by="ops")
    assert twice.value.reason == "day-closed"
    # A closed day takes no more postings: a refund now is dated today, not the closed day.
    late = payments.refund(uow, charge_id=paid.charge_id, amount_fen=1_000, reason="late return")
    assert (
        uow.conn.execute(select(t.txn.c.business_date).where(t.txn.c.txn_id == late.txn_id)).scalar_one()
        == "2026-06-16"
    )


def test_closed_day_refuses_postings_dated_to_it(
    uow: UnitOfWork, desk: CardDesk, region: Region, pinned: list[dt.datetime]
) -> None:
    card = resident(uow, desk, region, top_up=10_000)
    pinned[0] += dt.timedelta(days=1)
    payments.close_day(uow, day=dt.date(2026, 6, 15), closed_by="ops")
    pinned[0] -= dt.timedelta(days=1)  # a clock stepping back (or a straggler) must still not write into it
    with pytest.raises(PaymentError) as err:
        payments.top_up(uow, card_no=card, amount_fen=100, channel="cash", org=region.city_hospital)
    assert err.value.reason == "day-closed"


def test_discharge_bill_is_paid_from_the_deposit(
    uow: UnitOfWork, desk: CardDesk, region: Region, pinned: list[dt.datetime]
) -> None:
    card = resident(uow, desk, region, "ncms", top_up=200_000)
    deposit = payments.hold_deposit(
        uow, card_no=card, org=region.county_hospital, department="ward-2", amount_fen=150_000
    )
    ward = [payments.Item("ZL-1", "治疗费", "treatment", 300_000, 1)]
    with pytest.raises(PaymentError) as wrong:
        payments.charge(
            uow,
            card_no=card,
            org=region.city_hospital,
            department="ward-2",
            items=ward,
            hold_id=deposit.hold_id,
        )
    assert wrong.value.reason == "hold-mismatch"
    bill = payments.charge(
        uow,
        card_no=card,
        org=region.county_hospital,
        department="ward-2",
        items=ward,
        setting="inpatient",
        encounter="enc-77",
        hold_id=deposit.hold_id,
    )
    # county inpatient: deductible ¥500, 75% of ¥2,500 = ¥1,875 from the fund; the patient ¥1,125.
    assert (bill.shares.insurer_fen, bill.shares.self_pay_fen) == (187_500, 112_500)
    view = payments.wallet(uow, card_no=card)
    assert (view.balance_fen, view.held_fen) == (200_000 - 112_500, 0)
    hold = payments.get_hold(uow, hold_id=deposit.hold_id)
    assert (hold.status, hold.posted_fen, hold.txn_id) == ("posted", 112_500, bill.txn_id)
    with pytest.raises(PaymentError) as again:
        payments.charge(
            uow,
            card_no=card,
            org=region.county_hospital,
            department="ward-2",
            items=ward,
            hold_id=deposit.hold_id,
        )
    assert again.value.reason == "hold-finished"
    balanced(uow)


def test_a_bill_above_deposit_and_wallet_releases_nothing(
    uow: UnitOfWork, desk: CardDesk, region: Region, pinned: list[dt.datetime]
) -> None:
    card = resident(uow, desk, region, top_up=50_000)
    deposit = payments.hold_deposit(
        uow, card_no=card, org=region.county_hospital, department="ward", amount_fen=40_000
    )
    with pytest.raises(PaymentError) as err:
        payments.charge(
            uow,
            card_no=card,
            org=region.county_hospital,
            department="ward",
            items=[payments.Item("ZL-1", "治疗费", "treatment", 60_000, 1)],
            hold_id=deposit.hold_id,
        )
    assert err.value.reason == "insufficient-balance"
    view = payments.wallet(uow, card_no=card)
    assert (view.balance_fen, view.held_fen) == (50_000, 40_000)  # the savepoint undid the release
    assert payments.get_hold(uow, hold_id=deposit.hold_id).status == "held"


def test_reconciliation_finds_a_batch_that_no_longer_matches_the_ledger(
    uow: UnitOfWork, desk: CardDesk, region: Region, pinned: list[dt.datetime]
) -> None:
    card = resident(uow, desk, region, "ncms", top_up=200_000)
    for org in (region.city_hospital, region.township_centre):
        payments.charge(uow, card_no=card, org=org, department="clinic", items=[DRUG])
    today = dt.date(2026, 6, 15)
    pinned[0] += dt.timedelta(days=1)
    payments.close_day(uow, day=today, closed_by="ops")
    assert payments.day_report(uow, day=today)["reconciliation"]["reconciled"]
    bl, bt = t.batch_line, t.batch_txn
    city = uow.conn.execute(
        select(bl.c.line_id).where(bl.c.payee == region.city_hospital, bl.c.payer == "card-issuer")
    ).scalar_one()
    # A tie altered behind the ledger's back: its line no longer sums, and the ledger disagrees.
    uow.conn.execute(update(bt).where(bt.c.line_id == city).values(amount_fen=bt.c.amount_fen + 1))
    recon = payments.day_report(uow, day=today)["reconciliation"]
    assert not recon["reconciled"]
    assert any(f"line {city}:" in p for p in recon["problems"]), recon
    assert any("the ledger has transactions that no batch line ties" in p for p in recon["problems"])
    assert any("batch lines tie transactions the ledger does not have" in p for p in recon["problems"])
    # A hospital's view of the same day names only its own lines' problems.
    township = payments.day_report(uow, day=today, party=payments.Party(region.township_centre))
    assert township["reconciliation"]["reconciled"], township
    assert {line["payee"] for line in township["lines"]} == {region.township_centre}


def test_the_annual_cap_holds_across_institutions_to_the_fen(
    uow: UnitOfWork, desk: CardDesk, region: Region, pinned: list[dt.datetime]
) -> None:
    """封顶线: ¥200,000 a year of NCMS fund money per person, counted across every institution."""
    card = resident(uow, desk, region, "ncms", top_up=100_000_000)
    stay = [payments.Item("ZL-1", "治疗费", "treatment", 10_000_000, 1)]  # ¥100,000 a stay
    city, county = region.city_hospital, region.county_hospital
    paid: list[int] = []
    for n, org in enumerate([city, county, city, county, city, region.township_centre]):
        done = payments.charge(
            uow,
            card_no=card,
            org=org,
            department="ward",
            items=stay,
            setting="inpatient",
            encounter=f"stay-{n}",
        )
        paid.append(done.shares.insurer_fen)
        pinned[0] += dt.timedelta(days=3)
    # city: 60% of (¥100,000 - ¥1,000); county: 75% of (¥100,000 - ¥500); then the cap's last ¥6,575.
    assert paid == [5_940_000, 7_462_500, 5_940_000, 657_500, 0, 0]
    assert sum(paid) == 20_000_000
    capped = payments.get_charge(uow, charge_id=done.charge_id)
    assert "cap" in {step["rule"] for step in orjson.loads(capped.adjudication)["steps"]}
    accounts = {a["account"]: a["balance_fen"] for a in payments.trial_balance(uow).accounts}
    assert accounts["fund:ncms:330500"] == -20_000_000
    balanced(uow)


def balances(uow: UnitOfWork) -> dict[str, int]:
    return {str(a["account"]): int(str(a["balance_fen"])) for a in payments.trial_balance(uow).accounts}


def test_close_day_posts_each_line_from_the_points_to_the_payers_clearing_account(
    uow: UnitOfWork, desk: CardDesk, region: Region, pinned: list[dt.datetime]
) -> None:
    card = resident(uow, desk, region, "ncms", top_up=500_000)
    city, township, county = region.city_hospital, region.township_centre, region.county_hospital
    payments.charge(uow, card_no=card, org=city, department="clinic", items=[DRUG])  # all deductible
    payments.charge(uow, card_no=card, org=city, department="pharmacy", items=[EXAM])  # 40%
    paid = payments.charge(uow, card_no=card, org=township, department="clinic", items=[DRUG])  # 60%
    payments.refund(uow, charge_id=paid.charge_id, amount_fen=10_000, reason="one box back")
    deposit = payments.hold_deposit(uow, card_no=card, org=county, department="ward", amount_fen=40_000)
    payments.post_hold(uow, hold_id=deposit.hold_id, amount_fen=25_000)
    before = balances(uow)
    assert before[f"org:{city}:pharmacy"] == 50_000 and before[f"org:{township}:clinic"] == 20_000

    pinned[0] += dt.timedelta(days=1)
    report = payments.close_day(uow, day=dt.date(2026, 6, 15), closed_by="ops")
    after = balances(uow)
    lines = {(line["payer"], line["payee"]): line for line in report["lines"]}
    assert {key: line["amount_fen"] for key, line in lines.items()} == {
        ("card-issuer", city): 60_000,
        ("card-issuer", county): 25_000,
        ("card-issuer", township): 8_000,
        ("fund:ncms:330500", city): 20_000,
        ("fund:ncms:330500", township): 12_000,
    }
    # Each line is in the payer's clearing account for the institution; the points are cleared.
    for (payer, payee), line in lines.items():
        assert after[f"clearing:{payer}:{payee}"] == line["amount_fen"]
        kind, ref, org = uow.conn.execute(
            select(t.txn.c.kind, t.txn.c.ref, t.txn.c.org).where(t.txn.c.txn_id == line["clearing_txn_id"])
        ).one()
        assert (kind, ref, org) == ("clearing", "2026-06-15", payee)
    for point in ("clinic", "pharmacy"):
        assert after[f"org:{city}:{point}"] == 0
    assert after[f"org:{township}:clinic"] == after[f"org:{county}:ward"] == 0
    # Wallets and funds are as they were: the clearing only says who owes the institutions what.
    assert {a: b for a, b in after.items() if not a.startswith(("org:", "clearing:"))} == {
        a: b for a, b in before.items() if not a.startswith("org:")
    }
    assert payments.trial_balance(uow).balanced
    shown = payments.day_report(uow, day=dt.date(2026, 6, 15))
    recon = shown["reconciliation"]
    assert recon["reconciled"], recon
    assert {entry["clearing_txn_id"] for entry in recon["lines"]} == {
        line["clearing_txn_id"] for line in report["lines"]
    }
    mine = payments.day_report(uow, day=dt.date(2026, 6, 15), party=payments.Party(township))
    assert mine["reconciliation"]["reconciled"] and len(mine["reconciliation"]["lines"]) == 2

    # The next day: new charges wait in the points until their own close; an institution whose
    # lines net to nothing (a meal charged and refunded) posts nothing; one whose lines net to
    # nothing but whose points do not (the rest of yesterday's clinic charge refunded, the same
    # amount charged at the pharmacy) moves the money between its points.
    payments.charge(uow, card_no=card, org=city, department="clinic", items=[DRUG])
    meal = payments.charge(uow, card_no=card, org=county, department="canteen", items=[MEAL])
    payments.refund(uow, charge_id=meal.charge_id, amount_fen=2_000, reason="not eaten")
    payments.refund(uow, charge_id=paid.charge_id, amount_fen=20_000, reason="the rest back")
    other = [payments.Item("YP-2", "药", "drug", 20_000, 1)]  # 60%: the fund 12,000, the wallet 8,000
    payments.charge(uow, card_no=card, org=township, department="pharmacy", items=other)
    assert balances(uow)[f"org:{city}:clinic"] == 30_000
    assert balances(uow)[f"clearing:card-issuer:{city}"] == 60_000
    pinned[0] += dt.timedelta(days=1)
    second = payments.close_day(uow, day=dt.date(2026, 6, 16), closed_by="ops")
    zero = next(line for line in second["lines"] if line["payee"] == county)
    assert (zero["amount_fen"], zero["txn_count"], zero["clearing_txn_id"]) == (0, 2, None)
    moved = [line for line in second["lines"] if line["payee"] == township]
    assert [line["amount_fen"] for line in moved] == [0, 0] and moved[0]["clearing_txn_id"]
    later = balances(uow)
    assert (
        later[f"org:{city}:clinic"]
        == later[f"org:{township}:clinic"]
        == later[f"org:{township}:pharmacy"]
        == 0
    )
    assert later[f"clearing:card-issuer:{city}"] == 60_000 + 18_000
    assert later[f"clearing:fund:ncms:330500:{city}"] == 20_000 + 12_000
    assert payments.day_report(uow, day=dt.date(2026, 6, 16))["reconciliation"]["reconciled"]

    # Closed twice: refused, and no second clearing (one transaction for each institution paid:
    # three on the first day, two on the second).
    def clearing_txns() -> int:
        x = t.txn
        return int(uow.conn.execute(select(func.count()).where(x.c.kind == "clearing")).scalar_one())

    assert clearing_txns() == 5
    with pytest.raises(PaymentError) as twice:
        payments.close_day(uow, day=dt.date(2026, 6, 15), closed_by="ops")
    assert twice.value.reason == "day-closed" and clearing_txns() == 5

    # A report whose line names a transaction that is not its clearing is found out.
    d = t.day
    stored = orjson.loads(
        uow.conn.execute(select(d.c.report).where(d.c.business_date == "2026-06-15")).scalar_one()
    )
    stored["lines"][0]["clearing_txn_id"] = paid.txn_id
    uow.conn.execute(update(d).where(d.c.business_date == "2026-06-15").values(report=orjson.dumps(stored)))
    problems = payments.day_report(uow, day=dt.date(2026, 6, 15))["reconciliation"]["problems"]
    assert problems == [
        f"line {stored['lines'][0]['line_id']}: the ledger has no clearing transaction {paid.txn_id} for it"
    ]
