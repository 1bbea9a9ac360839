"""A charge reads the institution and the resident's Coverages from a per-process cache checked
against the stored versions: every change to them, committed in its own transaction (as another
request or process would), is seen by the very next charge. On both databases."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from tests.integration.payments.builders import CTX, Region, make_coverage, make_patient, make_region
from tests.integration.payments.conftest import CardDesk
from yilian import payments
from yilian.db import Database, UnitOfWork
from yilian.fhir import FhirRequest, dispatch
from yilian.kernel import clock
from yilian.kernel.naming import INSTITUTION_LEVEL

# Above the ¥300 annual deductible, so every insured charge has an insurer share.
EXAM = payments.Item("JC-0101", "腹部彩超", "exam", 100_000, 1)


@pytest.fixture(autouse=True)
def pinned() -> Iterator[None]:
    clock.set_clock(lambda: dt.datetime(2026, 6, 15, 2, 0, tzinfo=dt.UTC))
    yield
    clock.set_clock(None)


def committed(db: Database, fn: Any) -> Any:
    with UnitOfWork(db, write=True) as uow:
        return fn(uow)


def resident(db: Database, desk: CardDesk, region: Region, *, insured: bool) -> tuple[str, str, str | None]:
    """(card number, patient id, Coverage id or None), the wallet funded."""

    def make(uow: UnitOfWork) -> tuple[str, str, str | None]:
        patient = make_patient(uow)
        cov = make_coverage(uow, patient_id=patient, payor_org=region.insurer) if insured else None
        card = desk.issue(uow, patient)
        payments.top_up(uow, card_no=card, amount_fen=1_000_000, channel="cash", org=region.city_hospital)
        return card, patient, cov

    result: tuple[str, str, str | None] = committed(db, make)
    return result


def charge(db: Database, card: str, org: str) -> payments.service.ChargeResult:
    result: payments.service.ChargeResult = committed(
        db, lambda uow: payments.charge(uow, card_no=card, org=org, department="clinic", items=[EXAM])
    )
    return result


def read(uow: UnitOfWork, ref: str) -> dict[str, Any]:
    body = dispatch(uow, CTX, FhirRequest("GET", ref)).body or b"{}"
    resource: dict[str, Any] = orjson.loads(body)
    return resource


def rewrite(db: Database, ref: str, change: Any) -> None:
    def go(uow: UnitOfWork) -> None:
        resource = read(uow, ref)
        change(resource)
        dispatch(uow, CTX, FhirRequest("PUT", ref, body=resource))

    committed(db, go)


def delete(db: Database, ref: str) -> None:
    committed(db, lambda uow: dispatch(uow, CTX, FhirRequest("DELETE", ref)))


def level_of(db: Database, charge_id: str) -> str:
    def go(uow: UnitOfWork) -> str:
        return str(orjson.loads(payments.get_charge(uow, charge_id=charge_id).adjudication)["level"])

    result: str = committed(db, go)
    return result


def test_a_cancelled_coverage_is_seen_by_the_next_charge(
    db: Database, desk: CardDesk, region: Region
) -> None:
    card, _, cov = resident(db, desk, region, insured=True)
    assert charge(db, card, region.city_hospital).shares.insurer_fen > 0
    assert charge(db, card, region.city_hospital).shares.insurer_fen > 0  # from the cache
    rewrite(db, f"Coverage/{cov}", lambda c: c.update(status="cancelled"))
    assert charge(db, card, region.city_hospital).shares.insurer_fen == 0


def test_a_new_coverage_is_seen_by_the_next_charge(db: Database, desk: CardDesk, region: Region) -> None:
    card, patient, _ = resident(db, desk, region, insured=False)
    assert charge(db, card, region.city_hospital).shares.insurer_fen == 0
    assert charge(db, card, region.city_hospital).shares.insurer_fen == 0
    committed(db, lambda uow: make_coverage(uow, patient_id=patient, payor_org=region.insurer))
    assert charge(db, card, region.city_hospital).shares.insurer_fen > 0


def test_a_coverage_moved_to_another_beneficiary_or_deleted_is_seen(
    db: Database, desk: CardDesk, region: Region
) -> None:
    card, _, cov = resident(db, desk, region, insured=True)
    other_card, other, _ = resident(db, desk, region, insured=False)
    assert charge(db, card, region.city_hospital).shares.insurer_fen > 0
    assert charge(db, other_card, region.city_hospital).shares.insurer_fen == 0
    rewrite(db, f"Coverage/{cov}", lambda c: c.update(beneficiary={"reference": f"Patient/{other}"}))
    assert charge(db, card, region.city_hospital).shares.insurer_fen == 0
    assert charge(db, other_card, region.city_hospital).shares.insurer_fen > 0
    delete(db, f"Coverage/{cov}")
    assert charge(db, other_card, region.city_hospital).shares.insurer_fen == 0


def test_a_changed_or_deleted_institution_is_seen_by_the_next_charge(
    db: Database, desk: CardDesk, region: Region
) -> None:
    org = committed(db, lambda uow: make_region(uow).county_hospital)
    card, _, _ = resident(db, desk, region, insured=True)
    assert level_of(db, charge(db, card, org).charge_id) == "county"
    assert level_of(db, charge(db, card, org).charge_id) == "county"

    def to_city(resource: dict[str, Any]) -> None:
        resource["type"] = [{"coding": [{"system": INSTITUTION_LEVEL, "code": "3"}]}]

    rewrite(db, f"Organization/{org}", to_city)
    assert level_of(db, charge(db, card, org).charge_id) == "city"
    rewrite(db, f"Organization/{org}", lambda r: r.pop("type"))
    with pytest.raises(payments.PaymentError) as err:
        charge(db, card, org)
    assert err.value.reason == "institution-unclassified"
    delete(db, f"Organization/{org}")
    with pytest.raises(payments.PaymentError) as err:
        charge(db, card, org)
    assert err.value.reason == "unknown-institution"


def test_a_coverage_written_in_the_charge_s_own_unit_of_work_is_seen(
    uow: UnitOfWork, desk: CardDesk, region: Region
) -> None:
    patient = make_patient(uow)
    card = desk.issue(uow, patient)
    payments.top_up(uow, card_no=card, amount_fen=1_000_000, channel="cash", org=region.city_hospital)
    first = payments.charge(uow, card_no=card, org=region.city_hospital, department="clinic", items=[EXAM])
    assert first.shares.insurer_fen == 0
    # Not committed, its index rows perhaps still buffered: the next charge must still see it.
    make_coverage(uow, patient_id=patient, payor_org=region.insurer)
    second = payments.charge(uow, card_no=card, org=region.city_hospital, department="clinic", items=[EXAM])
    assert second.shares.insurer_fen > 0
