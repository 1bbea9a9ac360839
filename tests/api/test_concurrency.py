"""Concurrency through the real server, on SQLite and PostgreSQL.

- 16 concurrent If-Match updates of one version: exactly one succeeds, history has no gap;
- 32 concurrent conditional creates of one identifier: exactly one resource.
"""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.support.server import RunningServer


def test_if_match_race_has_one_winner(server: RunningServer, auth: dict[str, str]) -> None:
    base = f"{server.base}/fhir"
    pid = f"race-{uuid.uuid4().hex[:8]}"
    httpx.put(
        f"{base}/Patient/{pid}", json={"resourceType": "Patient", "id": pid}, timeout=30, headers=auth
    ).raise_for_status()

    def attempt(i: int) -> int:
        body = {"resourceType": "Patient", "id": pid, "name": [{"text": f"writer {i}"}]}
        with httpx.Client(timeout=60, headers=auth) as c:
            return c.put(f"{base}/Patient/{pid}", json=body, headers={"If-Match": 'W/"1"'}).status_code

    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(attempt, range(16)))
    assert codes.count(200) == 1, codes
    assert set(codes) <= {200, 409, 412}, codes
    hist = httpx.get(f"{base}/Patient/{pid}/_history", timeout=30, headers=auth).json()
    assert sorted(int(e["resource"]["meta"]["versionId"]) for e in hist["entry"]) == [1, 2]


def test_conditional_create_race_makes_one_resource(server: RunningServer, auth: dict[str, str]) -> None:
    base = f"{server.base}/fhir"
    ident = uuid.uuid4().hex
    body = {"resourceType": "Patient", "identifier": [{"system": "urn:yilian:test", "value": ident}]}

    def attempt(_: int) -> tuple[int, str]:
        with httpx.Client(timeout=60, headers=auth) as c:
            r = c.post(
                f"{base}/Patient", json=body, headers={"If-None-Exist": f"identifier=urn:yilian:test|{ident}"}
            )
            return r.status_code, r.json().get("id", "")

    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(attempt, range(32)))
    codes = [c for c, _ in results]
    assert codes.count(201) == 1, codes
    assert set(codes) <= {200, 201}, codes
    assert len({rid for _, rid in results}) == 1
    found = httpx.get(f"{base}/Patient?identifier=urn:yilian:test|{ident}", timeout=30, headers=auth).json()
    assert found["total"] == 1
