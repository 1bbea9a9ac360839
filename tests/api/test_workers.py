"""``yilian serve --workers 2``: several processes serve one platform, on SQLite and PostgreSQL.

Whatever request lands on whichever process, the guarantees are the database's: a token issued
by one worker works on the other, a conditional create raced across both makes one resource,
an If-Match race has one winner, and the audit chain both processes append to verifies.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.support.server import RunningServer, database_url
from yilian.db import Database, UnitOfWork
from yilian.security.audit import seal, verify
from yilian.security.clients import register_client


@pytest.fixture(scope="module")
def workers(db: Database, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    log = tmp_path_factory.mktemp("workers") / "server.log"
    with RunningServer(database_url(db), log=log, args=["--workers", "2"]) as srv:
        yield srv


def test_two_processes_serve_and_a_token_from_one_works_on_both(workers: RunningServer, db: Database) -> None:
    assert workers.proc is not None
    children = subprocess.run(
        ["pgrep", "-P", str(workers.proc.pid)], capture_output=True, text=True, check=False
    )
    assert len(children.stdout.split()) >= 2, children.stdout  # two worker processes under the parent
    with UnitOfWork(db, write=True) as uow:
        client, secret = register_client(uow, name="workers test", org_id=None, scopes="system/*.cruds")
    issued = httpx.post(
        f"{workers.base}/auth/token",
        data={"grant_type": "client_credentials", "client_id": client.client_id, "client_secret": secret},
        timeout=30,
    )
    assert issued.status_code == 200, issued.text
    auth = {"Authorization": f"Bearer {issued.json()['access_token']}"}

    def read(_: int) -> int:
        with httpx.Client(timeout=30, headers=auth) as c:  # a new connection: either process may answer
            return c.get(f"{workers.base}/fhir/Patient?_count=1").status_code

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(read, range(40))) == {200}
    assert httpx.get(f"{workers.base}/fhir/Patient", timeout=30).status_code == 401


def test_races_across_processes_have_one_winner_and_the_audit_chain_holds(
    workers: RunningServer, db: Database, auth: dict[str, str]
) -> None:
    base = f"{workers.base}/fhir"
    ident = uuid.uuid4().hex
    body = {"resourceType": "Patient", "identifier": [{"system": "urn:yilian:test", "value": ident}]}

    def create(_: int) -> tuple[int, str]:
        with httpx.Client(timeout=60, headers=auth) as c:
            r = c.post(
                f"{base}/Patient", json=body, headers={"If-None-Exist": f"identifier=urn:yilian:test|{ident}"}
            )
            return r.status_code, r.json().get("id", "")

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(create, range(32)))
    assert [c for c, _ in results].count(201) == 1, results
    assert {c for c, _ in results} <= {200, 201} and len({rid for _, rid in results}) == 1
    pid = results[0][1]

    def update(i: int) -> int:
        with httpx.Client(timeout=60, headers=auth) as c:
            doc = {**body, "id": pid, "name": [{"text": f"writer {i}"}]}
            return c.put(f"{base}/Patient/{pid}", json=doc, headers={"If-Match": 'W/"1"'}).status_code

    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(update, range(16)))
    assert codes.count(200) == 1 and set(codes) <= {200, 409, 412}, codes
    seal(db, grace_s=0)
    report = verify(db)
    assert report.ok, report.problems[:3]
