"""The HL7 listener the intake tests send to, once per database per module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.mllp import listener, register_gateway
from yilian.api.wiring import platform_settings
from yilian.db import Database
from yilian.exchange import IntakeSettings


@pytest.fixture(scope="module")
def settings() -> IntakeSettings:
    return IntakeSettings(fhir=platform_settings())


@pytest.fixture(scope="module")
def gateway(db: Database) -> str:
    """The client every message is sent as: a platform-operator gateway that may send as any
    facility, with every scope. The access decision and audit themselves are tested in
    test_mllp_security.py."""
    return register_gateway(db)


@pytest.fixture(scope="module")
def port(db: Database, settings: IntakeSettings, gateway: str) -> Iterator[int]:
    """The listener, on its own event loop in a thread, as ``yilian serve --mllp-port`` runs it
    (the insecure mode: plain TCP, every connection attributed to ``gateway``)."""
    with listener(db, settings, gateway) as bound:
        yield bound
