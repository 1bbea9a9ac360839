"""The payments FHIR views (Claim, ClaimResponse, Account, PaymentReconciliation) as stored
resources: published from the queue each ledger change adds to, valid R4, the same amounts as
the ledger to the fen, rewritten when the ledger moves (and only then), audited, seen only by
those the access policy lets see them, and never lost when a publication fails."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any, TypeVar

import pytest

from tests.integration.payments.builders import (
    Region,
    make_charge_item,
    make_coverage,
    make_encounter,
    make_patient,
    make_region,
)
from tests.integration.payments.conftest import CardDesk
from yilian import payments
from yilian.db import Database, UnitOfWork
from yilian.db.uow import read, transact
from yilian.fhir import FhirContext, FhirRequest, dispatch, validation
from yilian.kernel.errors import Category, YilianError
from yilian.payments import fhir_views, publication, publish_queue
from yilian.payments.fhir_views import CHARGE_SID, SETTLEMENT_SID, WALLET_SID
from yilian.payments.model import to_us
from yilian.payments.publication import PUBLISHER, publish_pending, queue_status, retry_now
from yilian.security.audit import search_audit
from yilian.security.policy import policy_for
from yilian.security.principal import SYSTEM, Principal
from yilian.security.scopes import parse_scopes

T = TypeVar("T")
CTX = FhirContext(base_url="http://testserver/fhir")


def settings() -> Any:
    from yilian.api.wiring import platform_settings

    return platform_settings({})


def run(db: Database, fn: Callable[[UnitOfWork], T]) -> T:
    return transact(db, fn)


def publish(db: Database) -> publication.PublishResult:
    return publish_pending(db, settings(), base_url="http://testserver/fhir")


def as_org(db: Database, org: str | None) -> FhirContext:
    scopes = parse_scopes("system/*.rs")
    principal = Principal(
        kind=SYSTEM, subject=f"test-{org}", scopes=scopes, org_id=org, client_id=f"test-{org}"
    )
    return FhirContext(base_url="http://testserver/fhir", policy=policy_for(principal, db))


def search(
    db: Database, rtype: str, query: list[tuple[str, str]], ctx: FhirContext = CTX
) -> list[dict[str, Any]]:
    with read(db) as uow:
        response = dispatch(uow, ctx, FhirRequest("GET", rtype, query=query))
    # Decimals parsed as written: the check is on the exact text, not a float's neighbourhood.
    bundle = json.loads(response.body or b"{}", parse_float=Decimal)
    return [e["resource"] for e in bundle.get("entry") or [] if e.get("search", {}).get("mode") != "include"]


def one(db: Database, rtype: str, system: str, value: str, ctx: FhirContext = CTX) -> dict[str, Any]:
    found = search(db, rtype, [("identifier", f"{system}|{value}")], ctx)
    assert len(found) == 1, found
    return found[0]


def valid(resource: dict[str, Any]) -> None:
    errors = [
        i
        for i in validation.validate(json.loads(json.dumps(resource, default=float)))
        if i.severity in ("error", "fatal")
    ]
    assert errors == [], errors


def shares(response: dict[str, Any]) -> dict[str, Decimal]:
    return {t["category"]["coding"][0]["code"]: t["amount"]["value"] for t in response["total"]}


def setup_charge(
    db: Database, desk: CardDesk, *, covered: bool = True, **charge: Any
) -> tuple[Region, str, str, payments.service.ChargeResult]:
    def go(uow: UnitOfWork) -> tuple[Region, str, str, Any]:
        region = make_region(uow)
        patient = make_patient(uow)
        if covered:
            make_coverage(uow, patient_id=patient, payor_org=region.insurer, scheme="ncms")
        card = desk.issue(uow, patient)
        payments.top_up(uow, card_no=card, amount_fen=100_000, channel="cash", org=region.township_centre)
        paid = payments.charge(
            uow,
            card_no=card,
            org=region.township_centre,
            department="clinic",
            diagnoses=["J06.900"],
            items=[
                payments.Item("YP-1", "阿莫西林", "drug", 3_333, 1),
                payments.Item("ST-1", "午餐", "canteen", 1_500, 1),
            ],
            **charge,
        )
        return region, patient, card, paid

    return run(db, go)


def test_views_are_published_as_the_ledger_says(
    db: Database, desk: CardDesk, pinned: list[dt.datetime], monkeypatch: pytest.MonkeyPatch
) -> None:
    publish(db)  # whatever earlier tests of this module left
    region, patient, card, paid = setup_charge(db, desk)
    # Queued with the charge, not yet written: the desk did not wait for the FHIR writes.
    assert search(db, "Claim", [("identifier", f"{CHARGE_SID}|{paid.charge_id}")]) == []
    waiting = queue_status(db)
    assert waiting.pending >= 3
    assert waiting.oldest_us == to_us(pinned[0])  # when the change was made: the views' lag
    done = publish(db)
    assert (done.written, done.failed) == (3, 0)  # the Claim, its ClaimResponse, the wallet's Account
    assert queue_status(db).pending == 0

    claim = one(db, "Claim", CHARGE_SID, paid.charge_id)
    valid(claim)
    assert claim["total"]["value"] == Decimal("48.33")
    assert claim["patient"]["reference"] == f"Patient/{patient}"
    assert claim["provider"]["reference"] == f"Organization/{region.township_centre}"
    assert claim["insurance"][0]["coverage"]["reference"].startswith("Coverage/")
    response = one(db, "ClaimResponse", CHARGE_SID, paid.charge_id)
    valid(response)
    assert response["request"]["reference"] == f"Claim/{claim['id']}"
    assert shares(response)["insurer"] == Decimal(paid.shares.insurer_fen) / 100 == Decimal("19.99")
    assert shares(response)["self-pay"] == Decimal("28.34")
    account = one(db, "Account", WALLET_SID, patient)
    valid(account)
    assert account["extension"][0]["valueMoney"]["value"] == Decimal("971.66")
    # Found like any stored resource: by the patient, by the provider.
    by_patient = search(db, "Claim", [("patient", patient)])
    assert [c["id"] for c in by_patient] == [claim["id"]]

    # Republishing what did not change writes no version.
    run(
        db,
        lambda uow: payments.top_up(
            uow, card_no=card, amount_fen=1_000, channel="cash", org=region.township_centre
        ),
    )
    run(db, lambda uow: publish_queue.enqueue(uow.conn, ["charge:" + paid.charge_id]))
    again = publish(db)
    assert (again.written, again.unchanged) == (1, 2)  # the Account moved; Claim and response did not
    assert one(db, "Claim", CHARGE_SID, paid.charge_id)["meta"]["versionId"] == "1"
    assert one(db, "Account", WALLET_SID, patient)["extension"][0]["valueMoney"]["value"] == Decimal("981.66")

    # A refund rewrites the adjudication; the claim as made stays as it was.
    run(db, lambda uow: payments.refund(uow, charge_id=paid.charge_id, amount_fen=1_500, reason="未用餐"))
    publish(db)
    response = one(db, "ClaimResponse", CHARGE_SID, paid.charge_id)
    assert response["meta"]["versionId"] == "2"
    assert shares(response)["refunded"] == Decimal("15.00")
    assert one(db, "Claim", CHARGE_SID, paid.charge_id)["meta"]["versionId"] == "1"

    # The day's clearing: one statement for the paid institution, one for the fund's administrator.
    monkeypatch.setenv("YILIAN_FUND_ADMINISTRATORS", f"fund:ncms:330500={region.insurer}")
    pinned[0] += dt.timedelta(days=1)
    report = run(db, lambda uow: payments.close_day(uow, day=dt.date(2026, 6, 15), closed_by="test"))
    publish(db)
    paid_lines = [line for line in report["lines"] if line["payee"] == region.township_centre]
    hospital = one(db, "PaymentReconciliation", SETTLEMENT_SID, f"2026-06-15/{region.township_centre}")
    valid(hospital)
    assert hospital["paymentAmount"]["value"] == Decimal(sum(line["amount_fen"] for line in paid_lines)) / 100
    assert {d["submitter"]["display"] for d in hospital["detail"]} == {line["payer"] for line in paid_lines}
    fund = one(db, "PaymentReconciliation", SETTLEMENT_SID, f"2026-06-15/{region.insurer}/funds")
    valid(fund)
    assert fund["paymentIssuer"]["reference"] == f"Organization/{region.insurer}"
    assert {d["submitter"]["display"] for d in fund["detail"]} == {"fund:ncms:330500"}
    # A line paid by transfer: the statement is written again with the transfer on that line.
    fund_line = next(line for line in paid_lines if line["payer"] == "fund:ncms:330500")
    run(
        db,
        lambda uow: payments.record_payout(
            uow, day=dt.date(2026, 6, 15), line_id=fund_line["line_id"], reference="ICBC-77", paid_by="test"
        ),
    )
    publish(db)
    hospital = one(db, "PaymentReconciliation", SETTLEMENT_SID, f"2026-06-15/{region.township_centre}")
    valid(hospital)
    transfers = {
        d["submitter"]["display"]: [e["valueIdentifier"]["value"] for e in d.get("extension", [])]
        for d in hospital["detail"]
    }
    assert transfers["fund:ncms:330500"] == ["ICBC-77"]
    assert all(v == [] for k, v in transfers.items() if k != "fund:ncms:330500")
    assert hospital["meta"]["versionId"] == "2"

    # Every write is audited, as the publisher.
    with read(db) as uow:
        page = search_audit(uow, [("entity", f"Claim/{claim['id']}")])
    assert any(r.agent_id == PUBLISHER and r.action == "C" for r in page)


def test_each_party_sees_its_own(db: Database, desk: CardDesk, pinned: list[dt.datetime]) -> None:
    pinned[0] = dt.datetime(2026, 6, 20, 2, 0, tzinfo=dt.UTC)  # each test its own business day
    region, patient, _card, paid = setup_charge(db, desk)
    pinned[0] += dt.timedelta(days=1)
    run(db, lambda uow: payments.close_day(uow, day=dt.date(2026, 6, 20), closed_by="test"))
    publish(db)
    mine = as_org(db, region.township_centre)
    other = as_org(db, region.city_hospital)
    value = f"2026-06-20/{region.township_centre}"
    assert one(db, "PaymentReconciliation", SETTLEMENT_SID, value, mine)["paymentDate"] == "2026-06-20"
    # Another hospital does not see the township centre's clearing, nor its charge.
    assert search(db, "PaymentReconciliation", [("identifier", f"{SETTLEMENT_SID}|{value}")], other) == []
    assert search(db, "Claim", [("identifier", f"{CHARGE_SID}|{paid.charge_id}")], other) == []
    # The charging institution sees its claim (the Claim's provider is a treatment reason).
    assert one(db, "Claim", CHARGE_SID, paid.charge_id, mine)["patient"]["reference"] == f"Patient/{patient}"


def test_a_self_pay_charge_and_a_reference_the_record_does_not_hold(
    db: Database, desk: CardDesk, pinned: list[dt.datetime]
) -> None:
    pinned[0] = dt.datetime(2026, 6, 22, 2, 0, tzinfo=dt.UTC)
    # Self-pay too (no coverage in force): R4 still wants an insurer and an insurance, in words.
    _region, _patient, _card, paid = setup_charge(db, desk, covered=False, encounter="never-sent")
    assert publish(db).failed == 0
    claim = one(db, "Claim", CHARGE_SID, paid.charge_id)
    valid(claim)
    encounter = claim["item"][0]["encounter"][0]
    assert "reference" not in encounter and "Encounter/never-sent" in encounter["display"]
    response = one(db, "ClaimResponse", CHARGE_SID, paid.charge_id)
    valid(response)
    assert shares(response)["self-pay"] == Decimal("48.33") and "self-pay" in response["insurer"]["display"]


def test_a_failed_publication_is_kept_and_retried(
    db: Database, desk: CardDesk, pinned: list[dt.datetime], monkeypatch: pytest.MonkeyPatch
) -> None:
    pinned[0] = dt.datetime(2026, 6, 24, 2, 0, tzinfo=dt.UTC)
    publish(db)
    _region, patient, _card, paid = setup_charge(db, desk)
    real = fhir_views.claim_response

    def broken(row: Any, claim_id: str) -> dict[str, Any]:
        raise YilianError(Category.INVALID, "policy text unreadable")

    monkeypatch.setattr(fhir_views, "claim_response", broken)
    done = publish(db)
    assert done.failed == 1 and done.written == 1  # the wallet's Account went out regardless
    # The charge's transaction rolled back whole: not a Claim without its response.
    assert search(db, "Claim", [("identifier", f"{CHARGE_SID}|{paid.charge_id}")]) == []
    status = queue_status(db)
    assert [(w.subject, w.attempts) for w in status.failing] == [(f"charge:{paid.charge_id}", 1)]
    assert "policy text unreadable" in (status.failing[0].last_error or "")
    assert publish(db).subjects == 0  # backing off: not tried again at once
    monkeypatch.setattr(fhir_views, "claim_response", real)
    assert retry_now(db) == 1
    assert publish(db).written == 2
    assert (
        one(db, "ClaimResponse", CHARGE_SID, paid.charge_id)["patient"]["reference"] == f"Patient/{patient}"
    )
    assert queue_status(db).pending == 0


def test_a_charge_links_the_charge_items_and_encounter_it_bills(
    db: Database, desk: CardDesk, pinned: list[dt.datetime]
) -> None:
    pinned[0] = dt.datetime(2026, 6, 25, 2, 0, tzinfo=dt.UTC)
    publish(db)

    def go(uow: UnitOfWork) -> tuple[Region, str, str, str, list[str], str]:
        region = make_region(uow)
        patient, stranger = make_patient(uow), make_patient(uow, given="敏")
        card = desk.issue(uow, patient)
        payments.top_up(uow, card_no=card, amount_fen=100_000, channel="cash", org=region.county_hospital)
        encounter = make_encounter(uow, patient_id=patient, org=region.county_hospital)
        items = [
            make_charge_item(uow, patient_id=patient, code=code, encounter=encounter)
            for code in ("YP-1", "JY-7")
        ]
        others = make_charge_item(uow, patient_id=stranger, code="YP-1")
        return region, patient, card, encounter, items, others

    region, patient, card, encounter, (drug_ci, lab_ci), strangers_ci = run(db, go)
    lines = [
        payments.Item("YP-1", "阿莫西林", "drug", 3_000, 2, drug_ci),
        payments.Item("JY-7", "血常规", "lab", 2_500, 1, lab_ci),
        payments.Item("ST-1", "午餐", "canteen", 1_500, 1),  # a line with no ChargeItem of its own
    ]

    def charge(uow: UnitOfWork, items: list[payments.Item]) -> payments.service.ChargeResult:
        return payments.charge(
            uow,
            card_no=card,
            org=region.county_hospital,
            department="clinic",
            encounter=encounter,
            items=items,
        )

    # Refused, each with its own reason, and nothing posted: a ChargeItem the record does not hold,
    # and one of another patient.
    with read(db) as uow:
        before = payments.trial_balance(uow).debits_fen
    for items, reason, category in (
        (
            [*lines, payments.Item("X", "x", "drug", 100, 1, "no-such-item")],
            "unknown-charge-item",
            Category.NOT_FOUND,
        ),
        (
            [*lines, payments.Item("YP-1", "x", "drug", 100, 1, strangers_ci)],
            "charge-item-mismatch",
            Category.CONFLICT,
        ),
    ):
        with pytest.raises(payments.PaymentError) as err:
            run(db, lambda uow, items=items: charge(uow, items))
        assert (err.value.reason, err.value.category) == (reason, category)
    with read(db) as uow:
        assert payments.trial_balance(uow).debits_fen == before
        assert payments.wallet(uow, card_no=card).balance_fen == 100_000

    paid = run(db, lambda uow: charge(uow, lines))
    with read(db) as uow:  # the charge as kept: its encounter and each line's ChargeItem
        row = payments.get_charge(uow, charge_id=paid.charge_id)
    assert row.encounter == encounter
    assert [i.get("charge_item") for i in json.loads(row.items)] == [
        f"ChargeItem/{drug_ci}",
        f"ChargeItem/{lab_ci}",
        None,
    ]
    assert publish(db).failed == 0
    claim = one(db, "Claim", CHARGE_SID, paid.charge_id)
    valid(claim)
    linked = [
        [
            e["valueReference"]["reference"]
            for e in item.get("extension", [])
            if e["url"] == fhir_views.CHARGE_ITEM_EXT
        ]
        for item in claim["item"]
    ]
    assert linked == [[f"ChargeItem/{drug_ci}"], [f"ChargeItem/{lab_ci}"], []]
    # The Encounter is in the record: a real reference on every line, and the Claim is found by it.
    assert {ref["reference"] for item in claim["item"] for ref in item["encounter"]} == {
        f"Encounter/{encounter}"
    }
    found = search(db, "Claim", [("encounter", f"Encounter/{encounter}")])
    assert [c["id"] for c in found] == [claim["id"]]
    assert claim["patient"]["reference"] == f"Patient/{patient}"
