"""A notification is a disclosure: each one delivered is in the audit log, as its owner's
access to the patient's record, written with the delivery; one withheld is not."""

from __future__ import annotations

import pytest

from tests.integration.exchange.test_outbound import (
    LOINC,
    fast,
    observation,
    org_client,
    patient_treated_at,
    put,
    run_until,
    subscribe,
    tag,
    write,
)
from tests.support.audit import audits
from tests.support.receiver import Receiver
from yilian.db import Database
from yilian.exchange.outbound import DeliveryWorker


@pytest.fixture
def receiver() -> Receiver:
    r = Receiver().start()
    yield r  # type: ignore[misc]
    r.stop()


def test_each_notification_delivered_is_audited_as_its_owners_access(
    db: Database, receiver: Receiver
) -> None:
    t = tag()
    hospital = org_client(db, f"org-n-{t}")
    patient_treated_at(db, f"pn-{t}", f"org-n-{t}")
    sub = subscribe(
        db, f"Observation?code={LOINC}|{t}", receiver.url, hospital, payload="application/fhir+json"
    )
    put(db, observation(f"on1-{t}", f"pn-{t}", t))
    put(db, observation(f"on2-{t}", f"pn-{t}", t))
    before = len(audits(db, "subscription-notification"))
    worker = DeliveryWorker(db, fast())
    run_until(worker, lambda: len(receiver.received) >= 2)
    worker.stop()
    rows = [
        r
        for r in audits(db, "subscription-notification")[before:]
        if f"Subscription/{sub}" in r.resource().get("outcomeDesc", "")
    ]
    assert [r.entity for r in rows] == [f"Observation/on1-{t}/_history/1", f"Observation/on2-{t}/_history/1"]
    for row in rows:
        assert (row.action, row.agent_kind, row.agent_id, row.org_id) == (
            "R",
            "system",
            hospital.client_id,
            f"org-n-{t}",
        )
        assert row.patient_keys == (f"pn-{t}",)
        assert row.outcome == 0


def test_a_withheld_notification_disclosed_nothing_and_is_not_audited(
    db: Database, receiver: Receiver
) -> None:
    t = tag()
    hospital = org_client(db, f"org-w-{t}")
    patient_treated_at(db, f"pw-{t}", f"org-w-{t}")
    subscribe(db, f"Observation?code={LOINC}|{t}", receiver.url, hospital, payload="application/fhir+json")
    put(db, observation(f"ow-{t}", f"pw-{t}", t))
    # The reason goes before delivery: the treating encounter is deleted.
    assert write(db, "DELETE", f"Encounter/enc-pw-{t}").status in (200, 204)
    worker = DeliveryWorker(db, fast())
    for _ in range(5):
        worker.run_once()
    worker.stop()
    assert receiver.received == []
    assert not [r for r in audits(db, "subscription-notification") if r.entity and f"ow-{t}" in r.entity]
