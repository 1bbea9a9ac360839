"""The FHIR views of payments (Claim, ClaimResponse, Account, PaymentReconciliation): valid R4,
the same amounts as the ledger, exact decimals, reads and searches through the FHIR router."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from tests.integration.payments.builders import make_coverage, make_patient, make_region
from tests.integration.payments.conftest import CardDesk
from yilian import payments
from yilian.db import UnitOfWork
from yilian.fhir import FhirContext, FhirRequest, FhirSettings, dispatch, validation
from yilian.kernel import clock
from yilian.kernel.errors import YilianError
from yilian.payments.fhir_views import virtual_types
from yilian.payments.model import PaymentError

CTX = FhirContext(base_url="http://testserver/fhir", settings=FhirSettings(virtual_types=virtual_types()))


@pytest.fixture
def pinned() -> Iterator[list[dt.datetime]]:
    now = [dt.datetime(2026, 6, 15, 2, 0, tzinfo=dt.UTC)]
    clock.set_clock(lambda: now[0])
    yield now
    clock.set_clock(None)


def get(uow: UnitOfWork, path: str, query: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    response = dispatch(uow, CTX, FhirRequest("GET", path, query=query or []))
    assert response.status == 200
    # Decimals parsed as written: the check is on the exact text, not a float's neighbourhood.
    return dict(json.loads(response.body or b"{}", parse_float=Decimal))


def valid(resource: dict[str, Any]) -> None:
    errors = [i for i in validation.validate(resource) if i.severity in ("error", "fatal")]
    assert errors == [], errors


def test_views_match_the_ledger(uow: UnitOfWork, desk: CardDesk, pinned: list[dt.datetime]) -> None:
    region = make_region(uow)
    patient = make_patient(uow)
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
    )
    claim = get(uow, f"Claim/{paid.charge_id}")
    valid(claim)
    assert (claim["total"]["value"]) == Decimal("48.33")
    assert claim["insurance"][0]["coverage"]["reference"].startswith("Coverage/")
    response = get(uow, f"ClaimResponse/{paid.charge_id}")
    valid(response)
    totals = {t["category"]["coding"][0]["code"]: (t["amount"]["value"]) for t in response["total"]}
    assert (
        totals["insurer"] == Decimal(paid.shares.insurer_fen) / 100 == Decimal("19.99")
    )  # 60% of 33.33, down
    assert totals["self-pay"] == Decimal("28.34")
    account = get(uow, f"Account/{patient}")
    valid(account)
    assert (account["extension"][0]["valueMoney"]["value"]) == Decimal("971.66")
    found = get(uow, "Claim", [("patient", f"Patient/{patient}")])
    assert [e["resource"]["id"] for e in found["entry"]] == [paid.charge_id]
    pinned[0] += dt.timedelta(days=1)
    payments.close_day(uow, day=dt.date(2026, 6, 15), closed_by="test")
    recon = get(uow, "PaymentReconciliation/2026-06-15")
    valid(recon)
    assert (recon["paymentAmount"]["value"]) == Decimal("48.33")  # issuer 28.34 + fund 19.99
    with pytest.raises(YilianError):
        get(uow, "Claim/no-such-charge")


def test_lines_link_to_stored_charge_items(
    uow: UnitOfWork, desk: CardDesk, pinned: list[dt.datetime]
) -> None:
    region = make_region(uow)
    patient, other = make_patient(uow), make_patient(uow, given="伟")
    card = desk.issue(uow, patient)
    payments.top_up(uow, card_no=card, amount_fen=10_000, channel="cash", org=region.city_hospital)

    def charge_item(subject: str) -> str:
        body = {
            "resourceType": "ChargeItem",
            "status": "billable",
            "code": {"text": "血常规"},
            "subject": {"reference": f"Patient/{subject}"},
        }
        response = dispatch(uow, CTX, FhirRequest("POST", "ChargeItem", body=body))
        return str(json.loads(response.body or b"{}")["id"])

    mine, theirs = charge_item(patient), charge_item(other)
    line = payments.Item("JY-01", "血常规", "lab", 2_000, 1, charge_item=mine)
    paid = payments.charge(uow, card_no=card, org=region.city_hospital, department="lab", items=[line])
    claim = get(uow, f"Claim/{paid.charge_id}")
    valid(claim)
    assert claim["item"][0]["extension"][0]["valueReference"]["reference"] == f"ChargeItem/{mine}"
    for linked, reason in ((theirs, "charge-item-mismatch"), ("no-such-item", "unknown-charge-item")):
        with pytest.raises(PaymentError) as err:
            payments.charge(
                uow,
                card_no=card,
                org=region.city_hospital,
                department="lab",
                items=[payments.Item("JY-01", "血常规", "lab", 2_000, 1, charge_item=linked)],
            )
        assert err.value.reason == reason
