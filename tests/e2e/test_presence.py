"""Presence in the page's header (docs/webinar-features.md, "Presence"): two people in the chat
both see "2 online", a number with an accessible label and nothing about who; one leaves and
the other sees 1."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import Browser, expect

from ..helpers import RunningServer, World
from .chat import open_chat


@pytest.fixture
def server_overrides() -> dict[str, Any]:
    return {"heartbeat_interval_s": 0.5, "presence_throttle_s": 0.2}


async def test_two_browsers_see_two_online_in_the_header(browser: Browser, server: RunningServer,
                                                         world: World) -> None:
    wid = world.webinar.id
    alice = await open_chat(browser, server, world.alice, wid)
    host = await open_chat(browser, server, world.host, wid)
    for chat in (alice, host):
        presence = chat.page.locator(".chat-header #presence")
        await expect(presence).to_have_text("2 online")
        await expect(chat.page.get_by_role("img", name="2 people online")).to_be_visible()
        await expect(presence).to_have_attribute("title", "2 people online now")
    await host.context.close()
    await expect(alice.page.locator("#presence")).to_have_text("1 online")
    await expect(alice.page.get_by_role("img", name="1 person online")).to_be_visible()
    assert alice.errors == []
