"""Outbound delivery on both databases: the outbox rides on the write's transaction, Subscription
criteria match exactly what the search engine finds for the owner, and a real HTTP receiver on
loopback gets every notification, in order, through failures, backoff and worker restarts."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from sqlalchemy import select, update

from tests.support.audit import audits, by_the_operator
from tests.support.fhir_calls import Call, call
from tests.support.paths import ROOT
from tests.support.receiver import Receiver
from tests.support.server import database_url, free_port
from yilian.api.wiring import platform_settings
from yilian.db import Database, UnitOfWork
from yilian.exchange.outbound import DeliverySettings, DeliveryWorker, backoff_s, outbox_status
from yilian.exchange.outbound.tables import destination, message
from yilian.fhir import FhirContext
from yilian.security.clients import register_client
from yilian.security.policy import SecurityPolicy
from yilian.security.principal import SYSTEM, Principal
from yilian.security.scopes import parse_scopes

SETTINGS = platform_settings({})
LOINC = "http://loinc.org"


def ctx_for(uow: UnitOfWork, principal: Principal | None = None) -> FhirContext:
    if principal is None:
        return FhirContext(base_url="http://testserver/fhir", settings=SETTINGS)
    return FhirContext(
        base_url="http://testserver/fhir", settings=SETTINGS, policy=SecurityPolicy(principal, uow.db)
    )


def write(db: Database, method: str, url: str, body: Any = None, principal: Principal | None = None) -> Call:
    with UnitOfWork(db, write=True) as uow:
        return call(uow, ctx_for(uow, principal), method, url, body)


def put(db: Database, res: dict[str, Any], principal: Principal | None = None) -> Call:
    r = write(db, "PUT", f"{res['resourceType']}/{res['id']}", res, principal)
    assert r.status in (200, 201), r
    return r


def tag() -> str:
    return uuid.uuid4().hex[:8]


def observation(oid: str, patient: str, code: str, *, status: str = "final") -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": status,
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": f"Patient/{patient}"},
    }


def subscription(
    criteria: str, endpoint: str, *, payload: str | None = None, header: list[str] | None = None
) -> dict[str, Any]:
    channel: dict[str, Any] = {"type": "rest-hook", "endpoint": endpoint}
    if payload:
        channel["payload"] = payload
    if header:
        channel["header"] = header
    return {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "test",
        "criteria": criteria,
        "channel": channel,
    }


def subscribe(
    db: Database, criteria: str, endpoint: str, principal: Principal | None = None, **kw: Any
) -> str:
    r = write(db, "POST", "Subscription", subscription(criteria, endpoint, **kw), principal)
    assert r.status == 201, r
    return str(r.json["id"])


def queued(db: Database, sub_id: str) -> list[tuple[str, str, int]]:
    """(type, id, seq) of what is queued for a subscription, in sequence order."""
    with db.engine.connect() as conn:
        rows = conn.execute(
            select(message.c.res_type, message.c.res_id, message.c.seq)
            .where(message.c.dest_id == f"Subscription/{sub_id}")
            .order_by(message.c.seq)
        ).all()
    return [(r.res_type, r.res_id, r.seq) for r in rows]


def org_client(db: Database, org: str) -> Principal:
    put(db, {"resourceType": "Organization", "id": org, "name": f"hospital {org}"})
    with UnitOfWork(db, write=True) as uow:
        client, _ = register_client(uow, name=f"HIS {org}", org_id=org, scopes="system/*.cruds")
    return Principal(
        kind=SYSTEM,
        subject=client.client_id,
        scopes=parse_scopes("system/*.cruds"),
        org_id=org,
        client_id=client.client_id,
    )


def patient_treated_at(db: Database, pid: str, org: str) -> None:
    put(
        db,
        {
            "resourceType": "Patient",
            "id": pid,
            "name": [{"family": "王", "given": ["芳"]}],
            "gender": "female",
            "birthDate": "1980-05-12",
        },
    )
    put(
        db,
        {
            "resourceType": "Encounter",
            "id": f"enc-{pid}",
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": f"Patient/{pid}"},
            "serviceProvider": {"reference": f"Organization/{org}"},
        },
    )


def fast(**kw: Any) -> DeliverySettings:
    base: dict[str, Any] = {
        "backoff_base_s": 0.05,
        "backoff_cap_s": 0.2,
        "error_after": 2,
        "poll_s": 0.05,
        "timeout_s": 2.0,
        "fhir": SETTINGS,
    }
    base.update(kw)
    return DeliverySettings(**base)


def run_until(worker: DeliveryWorker, done: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "delivery did not finish in time"
        worker.run_once()
        time.sleep(0.02)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


# --- the outbox and the write's transaction ----------------------------------------------------


def test_a_rolled_back_write_leaves_no_outbox_row_and_a_committed_one_is_numbered(db: Database) -> None:
    t = tag()
    put(db, {"resourceType": "Patient", "id": f"p-{t}"})
    sub = subscribe(db, f"Observation?code={LOINC}|{t}", "http://127.0.0.1:9/hook")

    class Boom(Exception):
        pass

    with pytest.raises(Boom), UnitOfWork(db, write=True) as uow:
        r = call(uow, ctx_for(uow), "PUT", f"Observation/o1-{t}", observation(f"o1-{t}", f"p-{t}", t))
        assert r.status == 201
        assert (
            len(uow.conn.execute(select(message).where(message.c.dest_id == f"Subscription/{sub}")).all())
            == 1
        )
        raise Boom
    assert queued(db, sub) == []

    put(db, observation(f"o2-{t}", f"p-{t}", t))
    put(db, observation(f"o3-{t}", f"p-{t}", t))
    assert queued(db, sub) == [("Observation", f"o2-{t}", 1), ("Observation", f"o3-{t}", 2)]
    with db.engine.connect() as conn:
        assert (
            conn.execute(
                select(message.c.txn).where(
                    message.c.dest_id == f"Subscription/{sub}", message.c.txn.is_not(None)
                )
            ).all()
            == []
        )


def test_a_failed_batch_entry_takes_its_notification_with_it(db: Database) -> None:
    t = tag()
    put(db, {"resourceType": "Patient", "id": f"p-{t}"})
    sub = subscribe(db, f"Observation?code={LOINC}|{t}", "http://127.0.0.1:9/hook")
    bad = observation(f"bad-{t}", f"missing-{t}", t)  # refers to a patient that does not exist
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {
                "resource": observation(f"ok-{t}", f"p-{t}", t),
                "request": {"method": "PUT", "url": f"Observation/ok-{t}"},
            },
            {"resource": bad, "request": {"method": "PUT", "url": f"Observation/bad-{t}"}},
        ],
    }
    r = write(db, "POST", "", bundle)
    assert r.status == 200, r
    statuses = [e["response"]["status"] for e in r.json["entry"]]
    assert statuses[0].startswith("201") and not statuses[1].startswith("2")
    assert queued(db, sub) == [("Observation", f"ok-{t}", 1)]


# --- subscriptions: creation, validation ---------------------------------------------------------


def test_a_requested_subscription_is_activated_and_a_bad_one_refused(db: Database) -> None:
    sub = subscribe(db, "ServiceRequest?status=active", "http://127.0.0.1:9/hook")
    r = write(db, "GET", f"Subscription/{sub}")
    assert r.json["status"] == "active"

    cases = {
        "Observation?no-such-param=1": 422,
        "NoSuchType?code=1": 422,
        "Observation?date=not-a-date": 422,
        "Observation?_include=Observation:subject": 422,
    }
    for criteria, status in cases.items():
        r = write(db, "POST", "Subscription", subscription(criteria, "http://127.0.0.1:9/hook"))
        assert r.status == status, (criteria, r)
        assert r.json["resourceType"] == "OperationOutcome"
        assert "criteria" in r.json["issue"][0]["diagnostics"].lower() or "Subscription.criteria" in str(
            r.json
        )
    websocket = subscription("Observation?code=1", "http://127.0.0.1:9/hook")
    websocket["channel"]["type"] = "websocket"
    refused = write(db, "POST", "Subscription", websocket)
    assert refused.status == 400 and refused.json["issue"][0]["code"] == "not-supported"
    not_http = subscription("Observation?code=1", "ftp://example.org/x")
    assert write(db, "POST", "Subscription", not_http).status == 422
    bad_header = subscription("Observation?code=1", "http://127.0.0.1:9/hook", header=["no colon here"])
    assert write(db, "POST", "Subscription", bad_header).status == 422


# --- matching is the search engine's -------------------------------------------------------------


def test_matching_token_string_and_reference_criteria_exactly(db: Database) -> None:
    t = tag()
    put(db, {"resourceType": "Patient", "id": f"zhang-{t}", "name": [{"family": f"张{t}", "given": ["伟"]}]})
    put(db, {"resourceType": "Patient", "id": f"li-{t}", "name": [{"family": f"李{t}", "given": ["娜"]}]})
    by_code = subscribe(db, f"Observation?code={LOINC}|{t}-1", "http://127.0.0.1:9/hook")
    by_code_any_system = subscribe(db, f"Observation?code={t}-1", "http://127.0.0.1:9/hook")
    by_subject = subscribe(
        db, f"Observation?subject=Patient/zhang-{t}&status=final", "http://127.0.0.1:9/hook"
    )
    by_family = subscribe(db, f"Patient?family=张{t}", "http://127.0.0.1:9/hook")

    put(db, observation(f"a-{t}", f"zhang-{t}", f"{t}-1"))  # code and subject match
    other_system = observation(f"b-{t}", f"li-{t}", f"{t}-1")
    other_system["code"]["coding"][0]["system"] = "http://example.org/local"
    put(db, other_system)  # same code, another system
    put(db, observation(f"c-{t}", f"zhang-{t}", f"{t}-2", status="preliminary"))  # subject yes, status no
    put(db, observation(f"d-{t}", f"li-{t}", f"{t}-3"))  # nothing
    put(db, observation(f"c-{t}", f"zhang-{t}", f"{t}-2"))  # now final: matches by_subject
    put(db, {"resourceType": "Patient", "id": f"li-{t}", "name": [{"family": f"李{t}"}]})  # not 张
    put(db, {"resourceType": "Patient", "id": f"zhang-{t}", "name": [{"family": f"张{t}"}], "gender": "male"})

    assert [q[1] for q in queued(db, by_code)] == [f"a-{t}"]
    assert [q[1] for q in queued(db, by_code_any_system)] == [f"a-{t}", f"b-{t}"]
    assert [q[1] for q in queued(db, by_subject)] == [f"a-{t}", f"c-{t}"]
    assert [q[1] for q in queued(db, by_family)] == [f"zhang-{t}"]


def test_an_org_a_subscription_never_carries_org_b_data(db: Database, receiver: Receiver) -> None:
    t = tag()
    hospital_a = org_client(db, f"org-a-{t}")
    org_client(db, f"org-b-{t}")
    patient_treated_at(db, f"pa-{t}", f"org-a-{t}")
    patient_treated_at(db, f"pb-{t}", f"org-b-{t}")
    sub = subscribe(
        db, f"Observation?code={LOINC}|{t}", receiver.url, hospital_a, payload="application/fhir+json"
    )

    put(db, observation(f"oa-{t}", f"pa-{t}", t))
    put(db, observation(f"ob-{t}", f"pb-{t}", t))  # the same code, a patient hospital A has no reason to see
    assert [q[1] for q in queued(db, sub)] == [f"oa-{t}"]

    worker = DeliveryWorker(db, fast())
    run_until(worker, lambda: len(receiver.received) >= 1)
    worker.stop()
    bodies = [orjson.loads(r.body) for r in receiver.received]
    assert [b["id"] for b in bodies] == [f"oa-{t}"]
    assert all(b["subject"]["reference"] == f"Patient/pa-{t}" for b in bodies)


# --- delivery ------------------------------------------------------------------------------------


def test_receiver_down_then_up_gets_everything_in_order(db: Database) -> None:
    t = tag()
    receiver = Receiver()  # not started: nothing listens on its port yet
    put(db, {"resourceType": "Patient", "id": f"p-{t}"})
    sub = subscribe(
        db,
        f"Observation?code={LOINC}|{t}",
        receiver.url,
        payload="application/fhir+json",
        header=["Authorization: Bearer hook-secret"],
    )
    ids = [f"o{i}-{t}" for i in range(6)]
    for oid in ids:
        put(db, observation(oid, f"p-{t}", t))

    worker = DeliveryWorker(db, fast(backoff_base_s=0.2, backoff_cap_s=0.4))
    for _ in range(3):  # three failed attempts: backoff state is written down
        worker.run_once()
        with db.engine.connect() as conn:
            head = conn.execute(
                select(message).where(message.c.dest_id == f"Subscription/{sub}").order_by(message.c.seq)
            ).first()
            dest = conn.execute(
                select(destination).where(destination.c.dest_id == f"Subscription/{sub}")
            ).one()
        assert head is not None and head.state == "pending" and head.last_error
        assert dest.next_try is not None and dest.next_try > head.created and dest.last_error
        time.sleep(0.45)
    with db.engine.connect() as conn:
        head = conn.execute(
            select(message).where(message.c.dest_id == f"Subscription/{sub}").order_by(message.c.seq)
        ).first()
    assert head is not None and head.attempts == 3
    assert write(db, "GET", f"Subscription/{sub}").json["status"] == "error"  # after error_after failures
    status = next(s for s in outbox_status(db) if s.dest_id == f"Subscription/{sub}")
    assert status.pending == 6 and status.failures == 3 and status.last_error

    receiver.start()
    try:
        run_until(worker, lambda: len(receiver.received) >= 6)
    finally:
        worker.stop()
        receiver.stop()
    assert [orjson.loads(r.body)["id"] for r in receiver.received] == ids
    assert receiver.sequence_numbers() == [1, 2, 3, 4, 5, 6]
    assert all(r.headers["authorization"] == "Bearer hook-secret" for r in receiver.received)
    assert all(r.headers["content-type"] == "application/fhir+json" for r in receiver.received)
    assert write(db, "GET", f"Subscription/{sub}").json["status"] == "active"
    status = next(s for s in outbox_status(db) if s.dest_id == f"Subscription/{sub}")
    assert status.pending == 0 and status.delivered == 6 and status.failures == 0


def test_an_empty_notification_when_no_payload_is_asked_for(db: Database, receiver: Receiver) -> None:
    t = tag()
    put(db, {"resourceType": "Patient", "id": f"p-{t}"})
    subscribe(db, f"Observation?code={LOINC}|{t}", receiver.url)
    put(db, observation(f"o-{t}", f"p-{t}", t))
    worker = DeliveryWorker(db, fast())
    run_until(worker, lambda: len(receiver.received) >= 1)
    worker.stop()
    assert receiver.received[0].method == "POST" and receiver.received[0].body == b""


def test_a_new_worker_continues_after_one_dies_holding_the_lease(db: Database, receiver: Receiver) -> None:
    t = tag()
    put(db, {"resourceType": "Patient", "id": f"p-{t}"})
    sub = subscribe(db, f"Observation?code={LOINC}|{t}", receiver.url, payload="application/fhir+json")
    ids = [f"o{i}-{t}" for i in range(5)]
    for oid in ids[:3]:
        put(db, observation(oid, f"p-{t}", t))

    # Leases long enough that the machine's load cannot run them out while the test watches;
    # the time passing is then simulated by moving the dead worker's lease into the past.
    first = DeliveryWorker(db, fast(batch=2, lease_s=60.0))
    others: set[str] = set()
    while (claim := first._claim(exclude=others)) is not None and claim.dest_id != f"Subscription/{sub}":
        others.add(claim.dest_id)  # other tests' destinations in this database
        first._release(claim.dest_id)
    assert claim is not None  # it takes the destination…
    first._work(claim)  # …delivers two messages, and dies without releasing its lease
    assert len(receiver.received) == 2
    for oid in ids[3:]:
        put(db, observation(oid, f"p-{t}", t))

    second = DeliveryWorker(db, fast(lease_s=60.0))  # a restarted process: a new worker, same database
    assert second.run_once() == 0  # the lease still holds: it leaves the destination alone
    with db.engine.begin() as conn:  # … until it runs out
        conn.execute(
            update(destination).where(destination.c.dest_id == f"Subscription/{sub}").values(lease_until=0)
        )
    run_until(second, lambda: len(receiver.received) >= 5)
    second.stop()
    assert [orjson.loads(r.body)["id"] for r in receiver.received] == ids
    assert receiver.sequence_numbers() == [1, 2, 3, 4, 5]
    assert all(q[2] for q in queued(db, sub))


def test_a_deleted_subscription_stops_and_drops_what_was_queued(db: Database) -> None:
    t = tag()
    put(db, {"resourceType": "Patient", "id": f"p-{t}"})
    sub = subscribe(db, f"Observation?code={LOINC}|{t}", "http://127.0.0.1:9/hook")
    put(db, observation(f"o1-{t}", f"p-{t}", t))
    assert write(db, "DELETE", f"Subscription/{sub}").status in (200, 204)
    put(db, observation(f"o2-{t}", f"p-{t}", t))
    status = next(s for s in outbox_status(db) if s.dest_id == f"Subscription/{sub}")
    assert not status.active and status.pending == 0
    assert [q[1] for q in queued(db, sub)] == [f"o1-{t}"]  # kept as cancelled, never sent


def test_a_subscription_is_seen_only_by_the_institution_that_owns_it(db: Database) -> None:
    """Its endpoint headers can hold the owner's secret and its criteria can name patients: no
    other institution finds it by read, search, history, _id or _has, nor changes it."""
    a, b = org_client(db, f"hosp-a-{tag()}"), org_client(db, f"hosp-b-{tag()}")
    secret = f"Authorization: Bearer s3cret-{tag()}"
    sub = subscribe(
        db, "Observation?code=http://loinc.org|8867-4", "http://127.0.0.1:9/hook", a, header=[secret]
    )

    def get(url: str, who: Principal) -> Call:
        with UnitOfWork(db) as uow:
            return call(uow, ctx_for(uow, who), "GET", url)

    mine = get(f"Subscription/{sub}", a)
    assert mine.status == 200 and secret in mine.json["channel"]["header"]
    for url in (f"Subscription/{sub}", f"Subscription/{sub}/_history/1", f"Subscription/{sub}/_history"):
        r = get(url, b)
        assert r.status == 404, (url, r)
        assert "s3cret" not in orjson.dumps(r.json).decode()
    for url in (
        "Subscription",
        f"Subscription?_id={sub}",
        "Subscription?status=active",
        "Subscription/_history",
    ):
        assert [e["resource"]["id"] for e in get(url, a).json.get("entry", []) if "resource" in e].count(
            sub
        ) >= 1, url
        assert "s3cret" not in orjson.dumps(get(url, b).json).decode(), url
        assert get(url, b).json.get("total", 0) == 0 or url.endswith("_history"), url
    changed = subscription("Observation?code=http://loinc.org|8867-4", "http://127.0.0.1:9/stolen")
    changed["id"] = sub
    assert write(db, "PUT", f"Subscription/{sub}", changed, b).status in (403, 404)
    # A delete of what the caller cannot see is the delete of nothing (no hint that it exists).
    write(db, "DELETE", f"Subscription/{sub}", None, b)
    kept = get(f"Subscription/{sub}", a)
    assert kept.status == 200 and kept.json["channel"]["endpoint"] == "http://127.0.0.1:9/hook"
    assert kept.json["meta"]["versionId"] == mine.json["meta"]["versionId"]  # B changed nothing
    # The platform operator (no institution) sees every subscription in the region.
    assert get(f"Subscription/{sub}", operator()).status == 200


def operator() -> Principal:
    return Principal(kind=SYSTEM, subject="operator", scopes=parse_scopes("system/*.cruds"), org_id=None)


def test_backoff_doubles_up_to_the_cap_with_jitter() -> None:
    import random

    rng = random.Random(7)
    for attempts, step in ((1, 1.0), (2, 2.0), (3, 4.0), (10, 60.0), (30, 60.0)):
        delays = [backoff_s(attempts, 1.0, 60.0, rng) for _ in range(200)]
        assert all(step / 2 <= d <= step for d in delays)
        assert max(delays) - min(delays) > step / 10  # jittered, not a fixed delay


# --- the commands ---------------------------------------------------------------------------------


def _yilian(*args: str) -> subprocess.CompletedProcess[str]:
    keep = ("YILIAN_DATA_KEYS", "YILIAN_INDEX_KEY")
    env = {k: v for k, v in os.environ.items() if not k.startswith("YILIAN_") or k in keep}
    proc = subprocess.run(
        [sys.executable, "-m", "yilian.cli.main", *args],
        cwd=ROOT,
        env={**env, "COLUMNS": "250", "YILIAN_DELIVERY_TIMEOUT": "2"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert "Traceback" not in proc.stdout + proc.stderr
    return proc


def test_outbox_deliver_and_forward_commands(db: Database, receiver: Receiver) -> None:
    t = tag()
    url = database_url(db)
    put(db, {"resourceType": "Patient", "id": f"p-{t}"})
    down = subscribe(db, f"Observation?code={LOINC}|{t}", f"http://127.0.0.1:{free_port()}/down")
    up = subscribe(db, f"Observation?code={LOINC}|{t}", receiver.url, payload="application/fhir+json")
    put(db, observation(f"o-{t}", f"p-{t}", t))

    run = _yilian("exchange", "deliver", "--once", "-d", url)
    assert run.returncode == 0, run.stderr
    assert [orjson.loads(r.body)["id"] for r in receiver.received] == [f"o-{t}"]

    run = _yilian("exchange", "outbox", "-d", url)
    assert run.returncode == 0, run.stderr
    lines = {
        line.split("│")[1].strip(): line
        for line in run.stdout.splitlines()
        if line.startswith("│ Subscription/")
    }
    assert "failing (1×)" in lines[f"Subscription/{down}"] and "ConnectError" in lines[f"Subscription/{down}"]
    assert "active" in lines[f"Subscription/{up}"]

    city = f"http://127.0.0.1:{free_port()}"
    run = _yilian("exchange", "forward", city, "-d", url)
    assert run.returncode == 0 and f"forward:{city}" in run.stdout
    put(db, {"resourceType": "Patient", "id": f"p-{t}", "gender": "male"})
    status = next(s for s in outbox_status(db) if s.dest_id == f"forward:{city}")
    assert status.active and status.pending == 1
    run = _yilian("exchange", "forward", city, "--stop", "-d", url)
    assert run.returncode == 0 and "1 queued writes dropped" in run.stdout
    run = _yilian("exchange", "forward", "not-a-url", "-d", url)
    assert run.returncode == 2 and "root URL" in run.stderr
    (start,) = [r for r in audits(db, "forward-start") if r.entity == f"forward:{city}"]
    assert by_the_operator(start, "U") == f"every write of this node is queued for forward:{city} from now on"
    (stop,) = [r for r in audits(db, "forward-stop") if r.entity == f"forward:{city}"]
    assert by_the_operator(stop, "U") == f"stopped forwarding to {city}; 1 queued writes dropped"


def test_a_message_refused_for_good_is_skipped_and_the_rest_go(db: Database, receiver: Receiver) -> None:
    """In-order delivery means one message the receiver never takes holds back the rest; the
    operator sets it aside (kept, with who and why) and the next ones go at once."""
    t = tag()
    url = database_url(db)
    put(db, {"resourceType": "Patient", "id": f"p-{t}"})
    sub = subscribe(db, f"Observation?code={LOINC}|{t}", receiver.url, payload="application/fhir+json")
    ids = [f"o{i}-{t}" for i in range(3)]
    for oid in ids:
        put(db, observation(oid, f"p-{t}", t))
    worker = DeliveryWorker(db, fast(backoff_base_s=30.0, backoff_cap_s=60.0))
    receiver.status = 422  # the receiver refuses the first one (and would forever)

    def failing() -> bool:
        return next(s for s in outbox_status(db) if s.dest_id == f"Subscription/{sub}").failures > 0

    run_until(worker, failing)
    assert queued(db, sub)[0][1] == ids[0] and not receiver.received

    run = _yilian("exchange", "skip", f"Subscription/{sub}", "--reason", "", "-d", url)
    assert run.returncode != 0 and "a reason is required" in run.stderr
    run = _yilian(
        "exchange",
        "skip",
        f"Subscription/{sub}",
        "--reason",
        "referenced drug not on the city list",
        "-d",
        url,
    )
    assert run.returncode == 0, run.stderr
    assert f"skipped message 1 of Subscription/{sub}: Observation/{ids[0]}" in " ".join(run.stdout.split())
    (skipped,) = [
        r for r in audits(db, "outbox-skip") if r.entity == f"Subscription/{sub}"
    ]  # not the refused one
    said = by_the_operator(skipped, "U")
    assert said.startswith(f"skipped message 1 of Subscription/{sub} (Observation/{ids[0]} version 1, after ")
    assert said.endswith("attempts): referenced drug not on the city list")

    receiver.status = 200
    receiver.received.clear()
    run_until(worker, lambda: len(receiver.received) >= 2)  # at once: the 30 s backoff was the skipped one's
    assert [orjson.loads(r.body)["id"] for r in receiver.received] == ids[1:]
    with db.engine.connect() as conn:
        states = conn.execute(
            select(message.c.seq, message.c.state, message.c.last_error)
            .where(message.c.dest_id == f"Subscription/{sub}")
            .order_by(message.c.seq)
        ).all()
    assert [s.state for s in states] == ["skipped", "delivered", "delivered"]
    assert "referenced drug not on the city list" in states[0].last_error and "422" in states[0].last_error
    status = next(s for s in outbox_status(db) if s.dest_id == f"Subscription/{sub}")
    assert (status.pending, status.delivered, status.skipped) == (0, 2, 1)
    run = _yilian("exchange", "skip", f"Subscription/{sub}", "--reason", "again", "-d", url)
    assert run.returncode != 0 and "no pending message" in run.stderr


def test_finished_messages_past_retention_are_pruned_and_pending_ones_kept(
    db: Database, receiver: Receiver
) -> None:
    """The outbox would grow by the region's write rate for ever: finished messages go after
    their retention, pending and skipped ones never, and delivery order is untouched."""
    from yilian.exchange.outbound import prune_outbox
    from yilian.exchange.outbound.retention import DAY_US, prunable

    t = tag()
    url = database_url(db)
    put(db, {"resourceType": "Patient", "id": f"p-{t}"})
    sub = subscribe(db, f"Observation?code={LOINC}|{t}", receiver.url, payload="application/fhir+json")
    dest = f"Subscription/{sub}"
    ids = [f"o{i}-{t}" for i in range(5)]
    for oid in ids[:3]:
        put(db, observation(oid, f"p-{t}", t))
    worker = DeliveryWorker(db, fast())
    run_until(worker, lambda: len(receiver.received) >= 3)
    receiver.status = 503  # the receiver goes down: the next two stay pending
    for oid in ids[3:]:
        put(db, observation(oid, f"p-{t}", t))

    def states() -> list[tuple[int, str]]:
        with db.engine.connect() as conn:
            return [
                (r.seq, r.state)
                for r in conn.execute(
                    select(message.c.seq, message.c.state)
                    .where(message.c.dest_id == dest)
                    .order_by(message.c.seq)
                )
            ]

    assert states() == [(1, "delivered"), (2, "delivered"), (3, "delivered"), (4, "pending"), (5, "pending")]
    now = int(time.time() * 1_000_000)
    with db.engine.begin() as conn:  # seq 1 and 2 finished 40 days ago; the pending ones were queued then too
        conn.execute(
            update(message)
            .where(message.c.dest_id == dest, message.c.seq <= 2)
            .values(delivered=now - 40 * DAY_US)
        )
        conn.execute(
            update(message)
            .where(message.c.dest_id == dest, message.c.seq >= 4)
            .values(created=now - 40 * DAY_US)
        )

    run = _yilian("exchange", "prune-outbox", "--older-than", "0.5", "-d", url)
    assert run.returncode != 0 and "retention must be at least 1 day" in run.stderr
    assert prunable(db, older_than_days=30) == 2
    run = _yilian("exchange", "prune-outbox", "--older-than", "30", "-d", url)
    assert run.returncode == 0, run.stderr
    assert "removed 2 finished messages" in " ".join(run.stdout.split())
    assert states() == [(3, "delivered"), (4, "pending"), (5, "pending")]
    # The deletions are recorded, once, as the operator's (the refused run removed and recorded nothing).
    (pruned,) = audits(db, "outbox-prune")
    said = by_the_operator(pruned, "D")
    assert said.startswith("removed 2 finished outbox messages") and "UTC (retention 30 days)" in said
    assert pruned.entity == "exchange outbox"

    receiver.status = 200  # back up: the pending ones go, in order, numbering untouched
    receiver.received.clear()
    run_until(worker, lambda: len(receiver.received) >= 2)
    assert [orjson.loads(r.body)["id"] for r in receiver.received] == ids[3:]
    assert states() == [(3, "delivered"), (4, "delivered"), (5, "delivered")]

    # In batches of their own transactions, each reported.
    with db.engine.begin() as conn:
        conn.execute(update(message).where(message.c.dest_id == dest).values(delivered=now - 40 * DAY_US))
    seen: list[int] = []
    done = prune_outbox(db, older_than_days=30, batch=2, progress=seen.append)
    assert done.removed == 3 and seen == [2, 1]
    assert states() == []
    status = next(s for s in outbox_status(db) if s.dest_id == dest)
    assert (status.pending, status.delivered) == (0, 0)


def test_deliver_stopped_by_sigterm_gives_up_its_lease(db: Database) -> None:
    """A service manager stops `yilian exchange deliver` with SIGTERM, often while it waits on a
    slow subscriber. It stops cleanly (status 0) and gives up the destination it had claimed, so
    the next deliverer starts at once instead of waiting out the lease."""
    import signal
    import socket

    t = tag()
    silent = socket.socket()  # accepts connections (the kernel's backlog) and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        put(db, {"resourceType": "Patient", "id": f"p-{t}"})
        sub = subscribe(
            db, f"Observation?code={LOINC}|{t}", f"http://127.0.0.1:{silent.getsockname()[1]}/hook"
        )
        put(db, observation(f"o-{t}", f"p-{t}", t))
        keep = ("YILIAN_DATA_KEYS", "YILIAN_INDEX_KEY")
        env = {k: v for k, v in os.environ.items() if not k.startswith("YILIAN_") or k in keep}
        proc = subprocess.Popen(
            [sys.executable, "-m", "yilian.cli.main", "exchange", "deliver", "-d", database_url(db)],
            cwd=ROOT,
            env={**env, "YILIAN_DELIVERY_TIMEOUT": "120"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 60
            owner = None
            while owner is None and time.monotonic() < deadline and proc.poll() is None:
                with db.engine.connect() as conn:
                    owner = conn.execute(
                        select(destination.c.lease_owner).where(
                            destination.c.dest_id == f"Subscription/{sub}"
                        )
                    ).scalar()
                time.sleep(0.1)
            assert owner is not None, "the deliverer never claimed the subscriber"
        finally:
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0 and "Traceback" not in err, err
        assert "delivering subscriptions" in out
        with db.engine.connect() as conn:
            row = conn.execute(
                select(destination.c.lease_owner, destination.c.lease_until).where(
                    destination.c.dest_id == f"Subscription/{sub}"
                )
            ).one()
        assert tuple(row) == (None, None)
        # The notification it could not deliver is still queued for the next deliverer.
        assert [d.pending for d in outbox_status(db) if d.dest_id == f"Subscription/{sub}"] == [1]
    finally:
        silent.close()
