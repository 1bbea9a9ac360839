"""Fixtures for tests against a real server process."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.auth import bearer, system_token
from tests.support.server import RunningServer, database_url
from yilian.db import Database


@pytest.fixture(scope="module")
def server(db: Database, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    log = tmp_path_factory.mktemp("server") / "server.log"
    with RunningServer(database_url(db), log=log) as srv:
        yield srv


@pytest.fixture(scope="module")
def operator_token(db: Database) -> str:
    """A token of the platform operator: region-wide, every interaction (and every access audited)."""
    return system_token(db, scopes="system/*.cruds", name="operator test client")


@pytest.fixture(scope="module")
def auth(operator_token: str) -> dict[str, str]:
    return bearer(operator_token)
