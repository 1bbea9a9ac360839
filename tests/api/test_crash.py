"""kill -9 of the server during a load of transactions: every acknowledged one is there, no partial one."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.support.server import RunningServer, database_url
from yilian.db import Database


def _bundle(tag: str, n: int) -> dict[str, object]:
    entries = []
    for i in range(n):
        pid = f"urn:uuid:{uuid.uuid4()}"
        entries.append(
            {
                "fullUrl": pid,
                "resource": {
                    "resourceType": "Patient",
                    "identifier": [{"system": "urn:crash", "value": f"{tag}-{i}"}],
                },
                "request": {"method": "POST", "url": "Patient"},
            }
        )
        entries.append(
            {
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"text": tag},
                    "subject": {"reference": pid},
                },
                "request": {"method": "POST", "url": "Observation"},
            }
        )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


@pytest.mark.slow
def test_kill_9_loses_nothing_acknowledged(db: Database, tmp_path: Path, auth: dict[str, str]) -> None:
    url = database_url(db)
    acked: list[str] = []
    sent: list[str] = []
    stop = threading.Event()
    server = RunningServer(url, log=tmp_path / "crash.log").start()

    def load() -> None:
        with httpx.Client(timeout=30, headers=auth) as c:
            while not stop.is_set():
                tag = uuid.uuid4().hex[:10]
                sent.append(tag)
                try:
                    r = c.post(f"{server.base}/fhir", json=_bundle(tag, 5))
                except httpx.HTTPError:
                    return
                if r.status_code == 200:
                    acked.append(tag)

    workers = [threading.Thread(target=load) for _ in range(4)]
    for w in workers:
        w.start()
    deadline = time.monotonic() + 60
    while len(acked) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # kill in the middle of the load, not at a quiet moment
    server.kill()
    stop.set()
    for w in workers:
        w.join(30)
    assert acked, "the load acknowledged nothing before the kill"

    with RunningServer(url, log=tmp_path / "crash.log") as again:
        base = f"{again.base}/fhir"
        for tag in sent:
            obs = httpx.get(
                f"{base}/Observation?code:text={tag}&_summary=count", timeout=30, headers=auth
            ).json()["total"]
            pats = httpx.get(
                f"{base}/Patient?identifier=urn:crash|{tag}-0&_summary=count", timeout=30, headers=auth
            ).json()["total"]
            if tag in acked:
                assert (obs, pats) == (5, 1), tag
            else:
                assert (obs, pats) in ((0, 0), (5, 1)), (
                    f"partial transaction visible for {tag}: {obs} obs, {pats} patients"
                )
