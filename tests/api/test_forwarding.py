"""Two real nodes on loopback: a district node forwards every write to the city node.

The city is stopped while the district keeps accepting writes; when the city comes back,
everything arrives, in order, once — the city's version of each resource is the district's,
and a deleted one is deleted there too.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from tests.support.auth import bearer, system_token
from tests.support.databases import drop_database, new_database
from tests.support.server import RunningServer, database_url
from yilian.db import Database, UnitOfWork
from yilian.exchange.outbound.tables import message
from yilian.security.clients import register_client


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[tuple[RunningServer, RunningServer, Database, Database]]:
    city_db, city_token = new_database("sqlite", tmp_path)
    district_db, district_token = new_database("sqlite", tmp_path)
    with UnitOfWork(city_db, write=True) as uow:
        client, secret = register_client(uow, name="district node", org_id=None, scopes="system/*.cruds")
    city = RunningServer(database_url(city_db), log=tmp_path / "city.log")
    district = RunningServer(
        database_url(district_db),
        log=tmp_path / "district.log",
        env={
            "YILIAN_FORWARD_TO": city.base,
            "YILIAN_FORWARD_CLIENT_ID": client.client_id,
            "YILIAN_FORWARD_CLIENT_SECRET": secret or "",
            "YILIAN_FORWARD_SOURCE": "urn:yilian:district-east",
            "YILIAN_DELIVERY_BACKOFF_BASE": "0.1",
            "YILIAN_DELIVERY_BACKOFF_CAP": "0.5",
            "YILIAN_DELIVERY_POLL": "0.1",
        },
    )
    city.start()
    district.start()
    try:
        yield city, district, city_db, district_db
    finally:
        district.stop()
        city.stop()
        drop_database("sqlite", district_db, district_token)
        drop_database("sqlite", city_db, city_token)


def pending(db: Database) -> int:
    with db.engine.connect() as conn:
        return int(conn.execute(select(func.count()).where(message.c.state == "pending")).scalar_one())


def wait_for(check: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_district_writes_reach_the_city_once_even_while_the_city_is_down(
    nodes: tuple[RunningServer, RunningServer, Database, Database],
) -> None:
    city, district, city_db, district_db = nodes
    d = bearer(system_token(district_db, name="district test client"))
    c = bearer(system_token(city_db, name="city test client"))
    dfhir, cfhir = f"{district.base}/fhir", f"{city.base}/fhir"

    def district_write(method: str, path: str, body: Any = None) -> httpx.Response:
        r = httpx.request(method, f"{dfhir}/{path}", json=body, headers=d, timeout=30)
        assert r.status_code in (200, 201, 204), r.text
        return r

    patients = []
    for i in range(3):
        r = district_write(
            "POST", "Patient", {"resourceType": "Patient", "name": [{"family": "陈", "given": [f"{i}"]}]}
        )
        patients.append(r.json()["id"])
    obs = district_write(
        "POST",
        "Observation",
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
            "subject": {"reference": f"Patient/{patients[0]}"},
            "valueQuantity": {"value": 120, "unit": "mmHg"},
        },
    ).json()["id"]
    wait_for(lambda: pending(district_db) == 0)
    r = httpx.get(f"{cfhir}/Patient/{patients[0]}", headers=c)
    assert r.status_code == 200 and r.json()["meta"]["source"].startswith("urn:yilian:district-east#Patient/")

    city.stop()
    # The city is down: the district keeps accepting writes, and keeps them for the city.
    district_write(
        "PUT", f"Patient/{patients[1]}", {"resourceType": "Patient", "id": patients[1], "gender": "male"}
    )
    district_write(
        "PUT", f"Patient/{patients[1]}", {"resourceType": "Patient", "id": patients[1], "gender": "female"}
    )
    district_write("DELETE", f"Observation/{obs}")
    later = district_write("POST", "Patient", {"resourceType": "Patient", "name": [{"family": "林"}]}).json()[
        "id"
    ]
    patients.append(later)
    time.sleep(1.0)  # a few failed attempts
    assert pending(district_db) == 4

    city.start()
    wait_for(lambda: pending(district_db) == 0)

    for pid in patients:
        here = httpx.get(f"{dfhir}/Patient/{pid}", headers=d).json()
        there = httpx.get(f"{cfhir}/Patient/{pid}", headers=c).json()
        assert there["meta"]["versionId"] == here["meta"]["versionId"]  # each version arrived once
        assert there.get("gender") == here.get("gender")
        history = httpx.get(f"{cfhir}/Patient/{pid}/_history", headers=c).json()
        assert history["total"] == int(here["meta"]["versionId"])
    assert httpx.get(f"{cfhir}/Observation/{obs}", headers=c).status_code == 410
    count = httpx.get(f"{cfhir}/Patient", params={"_summary": "count"}, headers=c).json()["total"]
    assert count == len(patients)
