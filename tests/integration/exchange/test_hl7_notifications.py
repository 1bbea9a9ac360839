"""From a hospital's HL7 v2 message to another member's rest-hook, end to end, on SQLite and
PostgreSQL: a lab result (ORU) and a referral (REF) sent over MLLP are stored, and the
subscribers whose criteria match them — and only those — are notified with what was stored."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest

from tests.integration.exchange.test_outbound import fast, run_until, subscribe
from tests.support.mllp import MESSAGES, ack_fields, patient, search, send
from tests.support.receiver import Receiver
from yilian.db import Database
from yilian.exchange.outbound import DeliveryWorker
from yilian.kernel import naming

LOINC = "http://loinc.org"
FHIR_JSON = "application/fhir+json"


@pytest.fixture
def hooks() -> Iterator[tuple[Receiver, Receiver]]:
    """Two member hospitals' endpoints: one whose criteria will match, one whose will not."""
    matching, other = Receiver().start(), Receiver().start()
    yield matching, other
    matching.stop()
    other.stop()


def bodies(receiver: Receiver) -> list[dict[str, object]]:
    return [orjson.loads(r.body) for r in receiver.received]


def test_a_lab_result_by_hl7_notifies_the_subscribers_it_matches(
    db: Database, port: int, hooks: tuple[Receiver, Receiver]
) -> None:
    hook, other = hooks
    subscribe(db, f"DiagnosticReport?code={LOINC}|24317-0", hook.url, payload=FHIR_JSON)  # hemogram
    subscribe(db, f"Observation?code={LOINC}|11125-2", hook.url, payload=FHIR_JSON)  # platelets
    subscribe(db, f"Observation?code={LOINC}|2345-7", other.url, payload=FHIR_JSON)  # glucose: not sent
    assert ack_fields(send(port, (MESSAGES / "LAB-ORU-1.hl7").read_bytes()))["MSA"][1] == "AA"
    worker = DeliveryWorker(db, fast())
    try:
        run_until(worker, lambda: len(hook.received) >= 2)
        worker.run_once()  # anything else due goes now too
    finally:
        worker.stop()
    person = patient(db, naming.mrn_system("1"), "10006579")
    (report,) = search(db, "DiagnosticReport", subject=f"Patient/{person['id']}", code=f"{LOINC}|24317-0")
    (platelets,) = search(db, "Observation", subject=f"Patient/{person['id']}", code=f"{LOINC}|11125-2")
    got = {b["resourceType"]: b for b in bodies(hook)}
    assert len(hook.received) == 2 and set(got) == {"DiagnosticReport", "Observation"}
    assert got["DiagnosticReport"]["id"] == report["id"] and len(report["result"]) == 5
    assert got["DiagnosticReport"]["meta"]["versionId"] == report["meta"]["versionId"]
    assert got["Observation"]["id"] == platelets["id"]
    assert got["Observation"]["valueQuantity"]["value"] == 221
    assert got["Observation"]["subject"] == {"reference": f"Patient/{person['id']}"}
    assert all(r.headers["content-type"] == FHIR_JSON for r in hook.received)
    assert other.received == []


def test_a_referral_by_hl7_and_its_cancellation_reach_the_subscriber_in_order(
    db: Database, port: int, hooks: tuple[Receiver, Receiver]
) -> None:
    hook, other = hooks
    sub = subscribe(db, "ServiceRequest?category=http://snomed.info/sct|3457005", hook.url, payload=FHIR_JSON)
    subscribe(db, "ServiceRequest?category=http://snomed.info/sct|3457005&priority=stat", other.url)
    raw = (MESSAGES / "REF-I12-01.hl7").read_bytes().replace(b"|226839^EPIC|", b"|R-HOOK^EPIC|")
    assert ack_fields(send(port, raw.replace(b"|MSG00112|", b"|HOOK-1|")))["MSA"][1] == "AA"
    cancel = (MESSAGES / "REF-I14-01.hl7").read_bytes().replace(b"|226839^EPIC|", b"|R-HOOK^EPIC|")
    assert ack_fields(send(port, cancel.replace(b"|MSG00112|", b"|HOOK-2|")))["MSA"][1] == "AA"
    worker = DeliveryWorker(db, fast())
    try:
        run_until(worker, lambda: len(hook.received) >= 2)
        worker.run_once()
    finally:
        worker.stop()
    (referral,) = search(db, "ServiceRequest", identifier=f"{naming.PLATFORM_SID}v2/referral/EPIC|R-HOOK")
    sent = bodies(hook)
    assert [(b["id"], b["meta"]["versionId"], b["status"]) for b in sent] == [
        (referral["id"], "1", "active"),
        (referral["id"], "2", "revoked"),
    ]
    assert [r.headers["x-yilian-subscription"] for r in hook.received] == [f"Subscription/{sub}"] * 2
    assert hook.sequence_numbers() == [1, 2]
    assert other.received == []  # a routine referral is not a stat one
