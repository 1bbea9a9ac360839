"""What a caller without a token may learn from the paths that are open to everyone (the front
page and the health checks): the platform's name and version and whether its database answers,
never where that database is or who connects to it."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy.exc import OperationalError

from yilian.api.app import create_app
from yilian.api.wiring import platform_settings
from yilian.db import Database

SECRET_HOST = "db-primary.internal.example"
SECRET_USER = "yilian_owner"


class Anonymous:
    """Requests with no token, in process."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def get(self, path: str) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="https://platform.example") as c:
                return await c.get(path)

        return asyncio.run(go())


@pytest.fixture(scope="module")
def client(db: Database) -> Anonymous:
    return Anonymous(create_app(db, platform_settings()))


def test_the_front_page_does_not_say_where_the_database_is(db: Database, client: Anonymous) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "医联" in page.text
    assert db.dialect in page.text  # which kind of database it runs on is no secret
    url = db.engine.url
    assert db.describe() not in page.text
    for private in {url.database, url.host, url.username} - {None, ""}:
        if str(private) not in db.dialect:  # the test server's user is "postgres"
            assert str(private) not in page.text


def test_a_failing_readiness_check_names_no_host_or_user(
    db: Database, client: Anonymous, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def down(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError(
            "SELECT 1",
            None,
            Exception(f'connection to server at "{SECRET_HOST}", port 5432 failed: user "{SECRET_USER}"'),
        )

    assert client.get("/health/ready").json() == {"status": "ready", "database": db.dialect}
    monkeypatch.setattr(db, "connect_autocommit", down)
    reply = client.get("/health/ready")
    assert reply.status_code == 503
    assert reply.json()["status"] == "unavailable" and reply.json()["database"] == db.dialect
    assert SECRET_HOST not in reply.text and SECRET_USER not in reply.text
    assert SECRET_HOST in caplog.text  # the operator finds the reason in the log
