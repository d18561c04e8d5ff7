"""A quiet webinar — the common case — in the browser, against the real `webinar-chat serve`
process: nobody types for many heartbeat intervals while a dead peer is closed, and the page
stays live over its socket the whole time (the failure this guards against: the server's
heartbeat loop died at its first idle close, and every page fell back to long-polling)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from playwright.async_api import Browser, expect

from ..conftest import CliServerFactory
from ..helpers import World, new_id, send
from ..liveness.test_liveness import socket
from .chat import FAST, open_chat
from .conftest import chromium

# The page declares a socket dead after FAST["silenceMs"] (2 s) without a frame; heartbeats every
# 0.5 s keep a healthy one far inside that, as 5 s do for the 10 s rule in production.
HEARTBEAT = 0.5
QUIET_S = 10.0
STATUS_RECORDER = """
window.__statuses = [];
new MutationObserver(() => {
  const el = document.getElementById('status');
  if (el) window.__statuses.push(el.dataset.status);
}).observe(document, {subtree: true, attributes: true, attributeFilter: ['data-status']});
"""


@pytest.fixture
async def cli_browser() -> AsyncIterator[Browser]:
    """Chromium for a test whose server is the CLI process (the `browser` fixture needs the
    in-process `server`); the `cli_server` fixture stops that process after this closes."""
    async with chromium() as launched:
        yield launched


async def test_a_quiet_room_keeps_every_page_live(cli_server: CliServerFactory, world: World,
                                                  cli_browser: Browser) -> None:
    assert FAST["silenceMs"] >= 4 * HEARTBEAT * 1000
    server = await cli_server(HEARTBEAT_INTERVAL=str(HEARTBEAT), CLIENT_IDLE_TIMEOUT="2")
    wid = world.webinar.id
    pages = [await open_chat(cli_browser, server, person, wid)  # type: ignore[arg-type]
             for person in (world.alice, world.bob)]
    long_polls: list[str] = []
    for chat in pages:
        await chat.page.evaluate(STATUS_RECORDER)
        chat.page.on("request", lambda request: long_polls.append(request.url)
                     if "/changes" in request.url and "wait=" in request.url else None)
    async with socket(server, world.moderator) as dead_peer:
        await dead_peer.join(wid, last_seq=0)
        await pages[0].page.wait_for_timeout(QUIET_S * 1000)  # the quiet minute, shortened
        assert dead_peer.closed is not None  # closed as idle in the middle of it
    for chat in pages:
        assert await chat.page.evaluate("window.__statuses") == [], "the page left 'live'"
        await expect(chat.status).to_have_attribute("data-status", "live")
        assert chat.errors == []
    assert long_polls == []
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        r = await send(http, world.alice, wid, "anyone still here?", new_id())
        assert r.status_code == 200
    for chat in pages:
        await expect(chat.message("anyone still here?")).to_have_attribute("data-state", "sent")
    for chat in pages:
        await chat.context.close()
