"""The page in English and Korean (docs/i18n.md): the language comes from the browser, a `?lang=`
link or the page's language menu (remembered); no English is left on a Korean page, live notices
included; times follow the viewer's locale."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.async_api import Browser, Page, expect

from ..helpers import RunningServer, World
from .chat import open_chat

# Every Latin word of the page's own texts (user content, names and titles are skipped): the
# visible text, hidden texts, and the aria-label / title / placeholder attributes.
LATIN_WORDS = """
() => {
  const skip = '.content, .author, .chat-title, .who, .question-content, .question-author, '
    + '.pinned-text, .avatar, #language, script, style, noscript';
  const words = new Set();
  const add = (text) => { for (const w of (text || '').match(/[A-Za-z]{2,}/g) || []) words.add(w); };
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    if (!n.parentElement.closest(skip)) add(n.textContent);
  }
  for (const el of document.body.querySelectorAll('*')) {
    if (el.closest(skip)) continue;
    for (const name of ['aria-label', 'title', 'placeholder']) add(el.getAttribute(name));
  }
  return [...words].sort();
}
"""
# Words a Korean page keeps: key names and file formats.
ALLOWED = {"Enter", "Shift", "CSV", "JSON", "HTTP"}


async def english_left(page: Page) -> list[str]:
    words: list[str] = await page.evaluate(LATIN_WORDS)
    return [w for w in words if w not in ALLOWED]


@pytest.fixture
def server_overrides() -> dict[str, Any]:
    return {"heartbeat_interval_s": 0.5, "presence_throttle_s": 0.2}


async def test_a_korean_browser_gets_the_whole_page_in_korean(browser: Browser,
                                                              server: RunningServer,
                                                              world: World) -> None:
    wid = world.webinar.id
    korean = await browser.new_context(locale="ko-KR", viewport={"width": 1000, "height": 720})
    alice = await open_chat(browser, server, world.alice, wid, context=korean)
    # The host's browser is English; a shared link with ?lang=ko wins.
    host = await open_chat(browser, server, world.host, wid, lang="ko")
    for chat in (alice, host):
        await expect(chat.page.locator("html")).to_have_attribute("lang", "ko")
        await expect(chat.status).to_have_text("실시간")
        await expect(chat.page.locator("#send-button")).to_have_text("보내기")
        await expect(chat.input).to_have_attribute("placeholder", "메시지를 입력하세요…")
        await expect(chat.page.locator("#presence")).to_have_attribute("aria-label", "2명 접속 중")

    await host.send("환영합니다")
    message = alice.message("환영합니다")
    await expect(message.locator(".role-badge")).to_have_text("호스트")
    # A ko-KR clock: 오전/오후 before the time.
    await expect(message.locator(".time")).to_have_text(re.compile(r"^(오전|오후) \d{1,2}:\d{2}$"))
    await expect(alice.page.locator(".day-separator").first).to_have_text("오늘")

    await host.page.locator(".settings-button").click()
    await expect(host.page.locator("#chat-settings")).to_be_visible()
    await expect(host.page.locator("label[for=chat-mode]")).to_have_text("채팅 가능 대상")
    assert await english_left(host.page) == []

    await alice.page.locator("#tab-qa").click()
    await expect(alice.page.locator("#ask-button")).to_have_text("질문하기")
    assert await english_left(alice.page) == []
    await alice.page.locator("#tab-chat").click()

    # A live change speaks Korean too: the notice, the subtitle and the composer.
    await host.page.locator("#chat-mode").select_option("read_only")
    await expect(alice.page.locator("#notice-banner")).to_have_text(
        "이제 채팅은 읽기 전용입니다. 호스트만 글을 쓸 수 있습니다.")
    await expect(alice.page.locator(".chat-subtitle")).to_have_text("읽기 전용")
    await expect(alice.input).to_have_attribute("placeholder", "지금은 호스트만 글을 쓸 수 있습니다")
    assert await english_left(alice.page) == []
    assert alice.errors == [] and host.errors == []


async def test_the_language_menu_switches_and_is_remembered(browser: Browser,
                                                            server: RunningServer,
                                                            world: World) -> None:
    alice = await open_chat(browser, server, world.alice, world.webinar.id)
    page = alice.page
    await expect(alice.status).to_have_text("Live")
    await expect(page.locator("html")).to_have_attribute("lang", "en")
    # The scan that finds no English on a Korean page finds it here.
    assert {"Live", "Send", "Settings", "Log"} <= set(await english_left(page))

    async with page.expect_navigation():
        await page.locator("#language").select_option("ko")
    await expect(alice.status).to_have_text("실시간")
    await expect(page.locator("#language")).to_have_value("ko")
    await page.reload()
    await expect(alice.status).to_have_text("실시간")  # remembered in this browser

    # The log-in page follows the same choice, and switches back.
    await page.goto(f"{server.base_url}/?list=1")
    await expect(page.locator("#webinars-title")).to_have_text("내 웨비나")
    await expect(page).to_have_title("로그인 · webinar-chat")
    async with page.expect_navigation():
        await page.locator("#language").select_option("en")
    await expect(page.locator("#webinars-title")).to_have_text("Your webinars")
    assert alice.errors == []


async def test_times_follow_the_viewers_locale(browser: Browser, server: RunningServer,
                                               world: World) -> None:
    wid = world.webinar.id
    british = await browser.new_context(locale="en-GB", viewport={"width": 1000, "height": 720})
    alice = await open_chat(browser, server, world.alice, wid, context=british)
    american = await browser.new_context(locale="en-US", viewport={"width": 1000, "height": 720})
    host = await open_chat(browser, server, world.host, wid, context=american)
    await host.send("what time is it")
    await expect(alice.message("what time is it").locator(".time")).to_have_text(
        re.compile(r"^\d{2}:\d{2}$"))  # 24-hour, en-GB
    await expect(host.message("what time is it").locator(".time")).to_have_text(
        re.compile(r"^\d{2}:\d{2}\s?(AM|PM)$"))
    assert alice.errors == [] and host.errors == []
