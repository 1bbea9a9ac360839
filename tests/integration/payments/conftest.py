"""Fixtures for payment tests: a card desk that issues and activates cards through the card
system (``yilian.card``), so payments is exercised through the very call it makes in production
(``yilian.card.require_usable``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.payments.builders import Region, make_region
from yilian import card
from yilian.api.app import create_app
from yilian.api.wiring import platform_settings
from yilian.card.model import platform_card_number
from yilian.db import Database, UnitOfWork
from yilian.fhir import FhirContext
from yilian.kernel import clock

CTX = FhirContext(base_url="http://testserver/fhir")


class CardDesk:
    def issue(self, uow: UnitOfWork, patient_id: str) -> str:
        view = card.issue_card(uow, CTX, patient_id=patient_id, actor="test:desk", reason="payments test")
        card.activate_card(uow, CTX, card_no=view.card_no, actor="test:desk", reason="holder activates")
        return view.card_no

    def report_lost(self, uow: UnitOfWork, card_no: str) -> None:
        card.report_lost(uow, CTX, card_no=card_no, actor="test:desk", reason="holder lost it")

    def suspend(self, uow: UnitOfWork, card_no: str) -> None:
        card.suspend_card(uow, CTX, card_no=card_no, actor="test:desk", reason="issuer suspends it")

    def resume(self, uow: UnitOfWork, card_no: str) -> None:
        card.resume_card(uow, CTX, card_no=card_no, actor="test:desk", reason="issuer lifts the suspension")

    def revoke(self, uow: UnitOfWork, card_no: str) -> None:
        card.revoke_card(uow, CTX, card_no=card_no, actor="test:desk", reason="issuer revokes it")

    def unknown_number(self) -> str:
        return platform_card_number()


@pytest.fixture(scope="module")
def desk() -> CardDesk:
    return CardDesk()


# A working morning of the year the shipped policies cover (10:00 Beijing time). The tests here
# charge residents insured under those policies; on the real clock they would stop being
# insured (Coverage periods and policies end with the year) the day the calendar moves on.
POLICY_YEAR_MORNING = dt.datetime(2026, 6, 15, 2, 0, tzinfo=dt.UTC)


@pytest.fixture(autouse=True)
def policy_year() -> Iterator[None]:
    """Every test here runs in the shipped policies' year: the clock starts at
    :data:`POLICY_YEAR_MORNING` and moves on at the real pace (a test may pin it further)."""
    with clock.running_from(POLICY_YEAR_MORNING):
        yield


def today() -> str:
    """The platform's business day now (Beijing time), as the API writes dates."""
    return clock.now().astimezone(dt.timezone(dt.timedelta(hours=8))).date().isoformat()


@pytest.fixture
def pinned() -> Iterator[list[dt.datetime]]:
    """The clock, held at 2026-06-15 10:00 Beijing time until a test moves it (``pinned[0]``)."""
    now = [POLICY_YEAR_MORNING]
    clock.set_clock(lambda: now[0])
    yield now
    clock.set_clock(None)


@pytest.fixture(scope="module")
def app(db: Database) -> Any:
    """The platform's app on the test database, one per test module."""
    return create_app(db, platform_settings())


@pytest.fixture(scope="module")
def region(db: Database) -> Region:
    """The demo region's institutions, funds and policies, once per test module."""
    with UnitOfWork(db, write=True) as uow:
        return make_region(uow)
