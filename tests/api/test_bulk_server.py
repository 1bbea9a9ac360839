"""``$export`` against a real server process: the worker thread started with the server runs the
job, the status URL turns from 202 to 200, and the files download."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import orjson
import pytest

from tests.support.server import RunningServer, database_url
from yilian.db import Database


@pytest.fixture(scope="module")
def bulk_server(db: Database, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("bulk-server")
    with RunningServer(
        database_url(db), env={"YILIAN_BULK_DIR": str(tmp / "files")}, log=tmp / "server.log"
    ) as srv:
        yield srv


def test_export_runs_in_the_server_and_downloads(bulk_server: RunningServer, auth: dict[str, str]) -> None:
    base = f"{bulk_server.base}/fhir"
    for n in range(3):
        body = {"resourceType": "Patient", "id": f"srv-bulk-{n}", "name": [{"family": "钱"}]}
        httpx.put(f"{base}/Patient/srv-bulk-{n}", json=body, headers=auth, timeout=30).raise_for_status()
    r = httpx.get(f"{base}/$export?_type=Patient", headers={**auth, "Prefer": "respond-async"}, timeout=30)
    assert r.status_code == 202, r.text
    status = r.headers["content-location"]
    deadline = time.monotonic() + 60
    while True:
        s = httpx.get(status, headers=auth, timeout=30)
        if s.status_code != 202 or time.monotonic() > deadline:
            break
        assert s.headers["x-progress"]
        time.sleep(0.2)
    assert s.status_code == 200, s.text
    (item,) = s.json()["output"]
    got = httpx.get(item["url"], headers=auth, timeout=30)
    assert got.status_code == 200
    ids = {orjson.loads(line)["id"] for line in got.content.splitlines()}
    assert {f"srv-bulk-{n}" for n in range(3)} <= ids
    assert len(ids) == item["count"]
    assert httpx.get(item["url"], timeout=30).status_code == 401
