"""End-to-end fixtures: the real server (SQLite only, to keep the suite fast) and real Chromium.

Chromium is Debian's (/usr/bin/chromium) driven by Playwright; nothing is downloaded."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from playwright.async_api import Browser, async_playwright, expect

from ..helpers import RunningServer

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]

# Playwright's assertions poll until this many milliseconds have passed.
expect.set_options(timeout=10_000)


@pytest.fixture
def backend() -> str:
    """The browser suite runs on SQLite only; the store contract tests cover PostgreSQL."""
    return "sqlite"


@pytest.fixture
def server_overrides() -> dict[str, Any]:
    # Heartbeats every 0.5 s let the pages use a 2 s silence threshold (tests/e2e/chat.py FAST)
    # without a healthy socket ever looking dead.
    return {"heartbeat_interval_s": 0.5}


@pytest.fixture
async def browser(server: RunningServer) -> AsyncIterator[Browser]:
    """Chromium for one test; closed before the server stops, so no long-poll is cut off."""
    async with chromium() as launched:
        yield launched


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """Debian's Chromium, headless, with the flags this machine needs."""
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                                    args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything here drives Chromium: `-m e2e` / `-m "not e2e"` select it."""
    for item in items:
        if "tests/e2e/" in item.nodeid.replace("\\", "/"):
            item.add_marker(pytest.mark.e2e)
