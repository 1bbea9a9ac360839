"""kill -9 of the server while hospitals are charging cards, on both databases: after each restart
every acknowledged payment is there exactly once, a retry of any payment with its key returns the
first reply (byte for byte when it had been acknowledged) without posting again, and the ledger
balances."""

from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import func, select

from tests.integration.payments.builders import make_patient, make_region
from tests.integration.payments.conftest import CardDesk
from tests.support.server import RunningServer, database_url
from yilian import payments
from yilian.db import Database, UnitOfWork
from yilian.db.uow import read
from yilian.fhir import FhirContext, FhirRequest, dispatch
from yilian.payments import tables as t
from yilian.payments.fhir_views import CHARGE_SID

# The issue's 20 rounds run with scripts/load-tests (YILIAN_LOAD_SCALE=full); three keep CI minutes sane.
ROUNDS = 20 if os.environ.get("YILIAN_LOAD_SCALE") == "full" else 3
DRUG = {"code": "YP-1", "name": "药", "category": "drug", "unit_price_fen": 1_234, "quantity": 1}


@pytest.mark.slow
def test_kill_9_during_charges(db: Database, tmp_path: Path, auth: dict[str, str]) -> None:
    desk = CardDesk()
    with UnitOfWork(db, write=True) as uow:
        region = make_region(uow)
        cards = [desk.issue(uow, make_patient(uow, given=f"崩{n}")) for n in range(4)]
        for card in cards:
            payments.top_up(
                uow, card_no=card, amount_fen=10_000_000, channel="cash", org=region.city_hospital
            )
    url = database_url(db)
    sent: dict[str, dict[str, Any]] = {}  # key → body
    acked: dict[str, bytes] = {}  # key → the reply as first acknowledged
    lock = threading.Lock()

    for round_no in range(ROUNDS):
        stop = threading.Event()
        server = RunningServer(url, log=tmp_path / f"crash-{round_no}.log").start()

        def load(worker: int, base: str = server.base, stop: threading.Event = stop) -> None:
            with httpx.Client(timeout=30, headers=auth) as client:
                while not stop.is_set():
                    key = uuid.uuid4().hex
                    body = {
                        "card_no": cards[worker % len(cards)],
                        "org": region.city_hospital,
                        "department": "pharmacy",
                        "items": [DRUG],
                    }
                    with lock:
                        sent[key] = body
                    try:
                        r = client.post(f"{base}/api/charges", json=body, headers={"Idempotency-Key": key})
                    except httpx.HTTPError:
                        return
                    if r.status_code == 201:
                        with lock:
                            acked[key] = r.content

        workers = [threading.Thread(target=load, args=(n,)) for n in range(4)]
        before = len(acked)
        for w in workers:
            w.start()
        deadline = time.monotonic() + 60
        while len(acked) < before + 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)  # in the middle of the load
        server.kill()
        stop.set()
        for w in workers:
            w.join(30)
        assert len(acked) > before, "the load acknowledged nothing before the kill"

    with (
        RunningServer(url, log=tmp_path / "crash-after.log") as again,
        httpx.Client(timeout=30, headers=auth) as client,
    ):
        for key, body in sent.items():
            r = client.post(f"{again.base}/api/charges", json=body, headers={"Idempotency-Key": key})
            assert r.status_code == 201, r.text
            if key in acked:
                assert r.content == acked[key], "an acknowledged payment's retry must return its first reply"
                assert r.headers.get("idempotent-replayed") == "true"
        # The server publishes the FHIR views by itself, kills during publication included:
        # every charge ends with exactly one Claim and one ClaimResponse, none twice.
        deadline = time.monotonic() + 180
        status = payments.publication_status(db)
        while status.pending and not status.failing and time.monotonic() < deadline:
            time.sleep(0.5)
            status = payments.publication_status(db)
        assert status.pending == 0, status
        with read(db) as uow:
            charge_ids = list(uow.conn.execute(select(t.charge.c.charge_id)).scalars())
            for rtype in ("Claim", "ClaimResponse"):
                for charge_id in charge_ids:
                    found = dispatch(
                        uow,
                        FhirContext(),
                        FhirRequest("GET", rtype, query=[("identifier", f"{CHARGE_SID}|{charge_id}")]),
                    )
                    assert orjson.loads(found.body or b"{}")["total"] == 1, (rtype, charge_id)
        one = client.get(f"{again.base}/fhir/Claim", params={"identifier": f"{CHARGE_SID}|{charge_ids[0]}"})
        assert one.status_code == 200 and one.json()["total"] == 1, one.text
    with read(db) as uow:
        charges = uow.conn.execute(select(func.count()).select_from(t.charge)).scalar_one()
        assert charges == len(sent), "exactly one charge per key, acknowledged or not"
        tb = payments.trial_balance(uow)
        assert tb.balanced, tb.as_json()
        spent = sum(payments.wallet(uow, card_no=c).balance_fen for c in cards)
        assert spent == 4 * 10_000_000 - len(sent) * 1_234
