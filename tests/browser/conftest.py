"""A real browser (the machine's Chromium, driven by Playwright) against a real server process.

``scripts/test`` installs Chromium from Debian's packages when it is missing; elsewhere set
``YILIAN_CHROMIUM`` to a Chromium or Chrome binary. Without one these tests fail, saying so:
the portal is not tested by anything else in a browser.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from tests.support.server import RunningServer, database_url
from yilian.db import Database

# A phone first (the portal is mobile-first): an ordinary Android screen, touch, Chinese.
PHONE: dict[str, Any] = {
    "viewport": {"width": 390, "height": 844},
    "device_scale_factor": 2,
    "is_mobile": True,
    "has_touch": True,
    "locale": "zh-CN",
}


def chromium_path() -> str:
    found = os.environ.get("YILIAN_CHROMIUM") or next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
    )
    if not found:
        pytest.fail(
            "no Chromium for the browser tests: run scripts/test (it installs Debian's chromium) "
            "or set YILIAN_CHROMIUM to a Chromium binary",
            pytrace=False,
        )
    return found


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # Module-scoped, not session-scoped: Playwright's sync API keeps an event loop running in
    # this thread while it is open, and tests that follow in the same worker call asyncio.run().
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=chromium_path(), headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def server(db: Database, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    log = tmp_path_factory.mktemp("server") / "server.log"
    with RunningServer(database_url(db), log=log) as srv:
        yield srv


@pytest.fixture
def phone(browser: Browser, server: RunningServer) -> Iterator[BrowserContext]:
    context = browser.new_context(base_url=server.base, **PHONE)
    try:
        yield context
    finally:
        context.close()


@pytest.fixture
def page(phone: BrowserContext) -> Page:
    return phone.new_page()
