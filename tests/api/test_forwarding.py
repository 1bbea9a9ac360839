"""Two real nodes on loopback, on SQLite and on PostgreSQL: a district node forwards every
write to the city node.

The city is stopped while the district keeps accepting writes; when the city comes back,
everything arrives, in order, once — the city's version of each resource is the district's,
and a deleted one is deleted there too. The district may be restarted meanwhile, and what the
district's HL7 listener stores is forwarded like any other write.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from tests.support.auth import bearer, system_token
from tests.support.databases import BACKENDS, drop_database, new_database
from tests.support.mllp import MESSAGES, ack_fields, register_gateway, send, written
from tests.support.server import RunningServer, database_url, free_port
from yilian.db import Database, UnitOfWork
from yilian.exchange.outbound.tables import message
from yilian.security.clients import register_client

SOURCE = "urn:yilian:district-east"


@dataclass
class Nodes:
    city: RunningServer
    district: RunningServer
    city_db: Database
    district_db: Database
    mllp_port: int  # the district's HL7 listener (yilian serve --mllp-port)

    def tokens(self) -> tuple[dict[str, str], dict[str, str]]:
        """Bearer headers for the district and the city."""
        d = bearer(system_token(self.district_db, name="district test client"))
        return d, bearer(system_token(self.city_db, name="city test client"))


@pytest.fixture(scope="module", params=BACKENDS)
def two_nodes(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nodes]:
    """The two nodes, started once per database for the tests here (each starts in seconds)."""
    backend: str = request.param
    tmp_path = tmp_path_factory.mktemp(f"nodes-{backend}")
    city_db, city_token = new_database(backend, tmp_path)
    district_db, district_token = new_database(backend, tmp_path)
    with UnitOfWork(city_db, write=True) as uow:
        client, secret = register_client(uow, name="district node", org_id=None, scopes="system/*.cruds")
    gateway = register_gateway(district_db, "district HIS gateway")
    mllp_port = free_port()
    city = RunningServer(database_url(city_db), log=tmp_path / "city.log")
    district = RunningServer(
        database_url(district_db),
        log=tmp_path / "district.log",
        env={
            "YILIAN_FORWARD_TO": city.base,
            "YILIAN_FORWARD_CLIENT_ID": client.client_id,
            "YILIAN_FORWARD_CLIENT_SECRET": secret or "",
            "YILIAN_FORWARD_SOURCE": SOURCE,
            "YILIAN_DELIVERY_BACKOFF_BASE": "0.1",
            "YILIAN_DELIVERY_BACKOFF_CAP": "0.5",
            "YILIAN_DELIVERY_POLL": "0.1",
        },
        args=["--mllp-port", str(mllp_port), "--insecure-trust-network", "--as-client", gateway],
    )
    city.start()
    district.start()
    try:
        yield Nodes(city, district, city_db, district_db, mllp_port)
    finally:
        district.stop()
        city.stop()
        drop_database(backend, district_db, district_token)
        drop_database(backend, city_db, city_token)


@pytest.fixture
def nodes(two_nodes: Nodes) -> Nodes:
    """Both nodes, running (a test that failed with one of them stopped leaves it stopped)."""
    for server in (two_nodes.city, two_nodes.district):
        if server.proc is None or server.proc.poll() is not None:
            server.start()
    return two_nodes


def city_patients(nodes: Nodes, c: dict[str, str]) -> int:
    r = httpx.get(f"{nodes.city.base}/fhir/Patient", params={"_summary": "count"}, headers=c, timeout=30)
    return int(r.json()["total"])


def pending(db: Database) -> int:
    with db.engine.connect() as conn:
        return int(conn.execute(select(func.count()).where(message.c.state == "pending")).scalar_one())


def write(fhir: str, headers: dict[str, str], method: str, path: str, body: Any = None) -> httpx.Response:
    r = httpx.request(method, f"{fhir}/{path}", json=body, headers=headers, timeout=30)
    assert r.status_code in (200, 201, 204), r.text
    return r


def arrived_once(nodes: Nodes, ref: str, d: dict[str, str], c: dict[str, str]) -> dict[str, Any]:
    """The city's copy of a district resource: its current version, sent once — the city's
    version and history count are the district's, and its source names that version."""
    here = httpx.get(f"{nodes.district.base}/fhir/{ref}", headers=d, timeout=30).json()
    there = httpx.get(f"{nodes.city.base}/fhir/{ref}", headers=c, timeout=30).json()
    version = here["meta"]["versionId"]
    assert there["meta"]["versionId"] == version, ref
    assert there["meta"]["source"] == f"{SOURCE}#{ref}/_history/{version}"
    history = httpx.get(f"{nodes.city.base}/fhir/{ref}/_history", headers=c, timeout=30).json()
    assert history["total"] == int(version), ref
    return dict(there)


def restart(server: RunningServer) -> None:
    """Stop a node as a process manager does (SIGTERM), and start it again.

    ``yilian serve`` stops its delivery worker on SIGTERM and gives up its lease; a lease left
    held would keep the restarted node from delivering for a minute, past ``wait_for``'s 30 s.
    """
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGTERM)
    assert server.proc.wait(30) == 128 + signal.SIGTERM
    server.start()


def wait_for(check: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_district_writes_reach_the_city_once_even_while_the_city_is_down(nodes: Nodes) -> None:
    city, district, district_db = nodes.city, nodes.district, nodes.district_db
    d, c = nodes.tokens()
    dfhir, cfhir = f"{district.base}/fhir", f"{city.base}/fhir"
    before = city_patients(nodes, c)

    def district_write(method: str, path: str, body: Any = None) -> httpx.Response:
        return write(dfhir, d, method, path, body)

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
    assert r.status_code == 200 and r.json()["meta"]["source"].startswith(f"{SOURCE}#Patient/")

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
        assert arrived_once(nodes, f"Patient/{pid}", d, c).get("gender") == district_write(
            "GET", f"Patient/{pid}"
        ).json().get("gender")
    assert httpx.get(f"{cfhir}/Observation/{obs}", headers=c).status_code == 410
    assert city_patients(nodes, c) == before + len(patients)


def test_a_district_restarted_while_writes_wait_for_the_city_loses_none_and_sends_none_twice(
    nodes: Nodes,
) -> None:
    city, district, district_db = nodes.city, nodes.district, nodes.district_db
    d, c = nodes.tokens()
    dfhir = f"{district.base}/fhir"
    before = city_patients(nodes, c)
    first = write(dfhir, d, "POST", "Patient", {"resourceType": "Patient", "name": [{"family": "周"}]}).json()
    wait_for(lambda: pending(district_db) == 0)
    city.stop()
    pid = first["id"]
    for gender in ("male", "female"):
        write(dfhir, d, "PUT", f"Patient/{pid}", {"resourceType": "Patient", "id": pid, "gender": gender})
    other = write(dfhir, d, "POST", "Patient", {"resourceType": "Patient", "name": [{"family": "吴"}]}).json()
    assert pending(district_db) == 3
    # The district is restarted while the city is still down: what waits is still waiting, and
    # the restarted node keeps queuing.
    restart(district)
    assert pending(district_db) == 3
    write(
        dfhir,
        d,
        "PUT",
        f"Patient/{other['id']}",
        {"resourceType": "Patient", "id": other["id"], "gender": "male"},
    )
    assert pending(district_db) == 4
    city.start()
    wait_for(lambda: pending(district_db) == 0)
    assert arrived_once(nodes, f"Patient/{pid}", d, c)["gender"] == "female"
    assert arrived_once(nodes, f"Patient/{other['id']}", d, c)["gender"] == "male"
    assert city_patients(nodes, c) == before + 2


def test_writes_arriving_by_hl7_are_forwarded(nodes: Nodes) -> None:
    d, c = nodes.tokens()
    deadline = time.monotonic() + 30
    while True:  # the listener starts beside the HTTP server, in its own thread
        try:
            socket.create_connection(("127.0.0.1", nodes.mllp_port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "the district's MLLP listener did not start"
            time.sleep(0.05)
    raw = (MESSAGES / "ORU-R01-01.hl7").read_bytes()
    assert ack_fields(send(nodes.mllp_port, raw))["MSA"][1] == "AA"
    wait_for(lambda: pending(nodes.district_db) == 0)
    refs = [f"{r['resourceType']}/{r['id']}" for r in written(nodes.district_db, raw)]
    kinds = {ref.split("/")[0] for ref in refs}
    assert {"Patient", "Observation", "DiagnosticReport", "ServiceRequest"} <= kinds
    for ref in refs:
        arrived_once(nodes, ref, d, c)
    # The city finds the results by the patient, as the district does.
    (patient,) = [ref for ref in refs if ref.startswith("Patient/")]
    found = httpx.get(
        f"{nodes.city.base}/fhir/Observation", params={"subject": patient, "_summary": "count"}, headers=c
    ).json()["total"]
    assert found == sum(ref.startswith("Observation/") for ref in refs) > 0
