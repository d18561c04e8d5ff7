"""Korean (Hangul) typed through an IME, in real Chromium, into the chat composer and the Q&A ask
box: Enter pressed while a syllable is still being composed sends nothing; once the text is
committed, Enter sends all of it, exactly once.

The IME is played through the Chrome DevTools Protocol, as an input method drives Chromium:
every key the IME consumes is a raw keydown with keyCode 229, the syllable being built is set
with `Input.imeSetComposition` (ㅇ → 아 → 안), and a finished syllable is committed with
`Input.insertText`. Chromium marks every key event fired while a composition is open with
`isComposing: true`; the tests check what the page really saw (keyCode, isComposing) as well as
what the server stored."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, CDPSession, Locator, expect

from ..helpers import RunningServer, World, auth, eventually
from .chat import ChatPage, open_chat, stored

GREETING = "안녕하세요 여러분"
QUESTION = "발표 자료 공유해 주시나요"
# How long "nothing was sent" is watched for: a send goes out at once (the input is cleared
# synchronously and the POST starts in the same task), so this is ample.
QUIET_S = 1.5

# Every keyboard and composition event of one element, in order, as the page saw it.
EVENT_LOG = """(selector) => {
  const el = document.querySelector(selector);
  window.__ime = [];
  for (const type of ['keydown', 'keyup', 'compositionstart', 'compositionend']) {
    el.addEventListener(type, (e) => window.__ime.push({type, key: e.key ?? null,
      keyCode: e.keyCode ?? null, isComposing: e.isComposing ?? null, data: e.data ?? null,
      value: el.value}), true);
  }
}"""

# Hangul syllables are composed algorithmically (Unicode 3.12): 0xAC00 + (L * 21 + V) * 28 + T.
# The initial consonant shown alone while composing is the compatibility jamo of L.
INITIALS = "ㄱㄲㄴㄷㄸㄹㅁㅂㅃㅅㅆㅇㅈㅉㅊㅋㅌㅍㅎ"


def composition_steps(syllable: str) -> list[str]:
    """What a 2-set Korean IME shows while `syllable` is typed: 분 → ㅂ, 부, 분."""
    index = ord(syllable) - 0xAC00
    assert 0 <= index < 11172, syllable
    initial, medial, final = index // 588, (index % 588) // 28, index % 28
    open_syllable = chr(0xAC00 + (initial * 21 + medial) * 28)
    return [INITIALS[initial], open_syllable] + ([syllable] if final else [])


class Ime:
    """A Korean input method driving Chromium over CDP."""

    def __init__(self, cdp: CDPSession) -> None:
        self.cdp = cdp
        self.composing = ""  # the syllable currently in the composition ("" = none)

    async def _key(self, type_: str, key: str, key_code: int, **extra: Any) -> None:
        await self.cdp.send("Input.dispatchKeyEvent", {
            "type": type_, "key": key, "windowsVirtualKeyCode": key_code, **extra})

    async def _ime_key(self) -> None:
        """A key the IME consumes: keydown "Process" / 229, as Chromium reports it."""
        await self._key("rawKeyDown", "Process", 229)

    async def commit(self) -> None:
        if self.composing:
            await self.cdp.send("Input.insertText", {"text": self.composing})
            self.composing = ""

    async def type(self, text: str) -> None:
        """Type `text` jamo by jamo; the last syllable is left in the composition."""
        for char in text:
            if char == " ":
                await self._ime_key()
                await self.commit()  # the space ends the syllable, then is typed itself
                await self.cdp.send("Input.insertText", {"text": " "})
                continue
            for n, step in enumerate(composition_steps(char)):
                await self._ime_key()
                if n == 0:
                    await self.commit()  # a new syllable starts: the previous one is done
                await self.cdp.send("Input.imeSetComposition", {
                    "text": step, "selectionStart": len(step), "selectionEnd": len(step)})
                self.composing = step
                await self._key("keyUp", "Process", 229)

    async def ime_enter(self, key_code: int) -> None:
        """Enter as the IME passes it on (no text). With the composition open, keyCode 229 is
        what an IME that consumes the key reports (Chromium on macOS: key "Enter", keyCode 229);
        keyCode 13 is a key that reaches the page unprocessed, so only `isComposing` tells it
        from a real Enter. After the composition ended, 229 is WebKit's order (see below)."""
        await self._key("rawKeyDown", "Enter", key_code, code="Enter")
        await self._key("keyUp", "Enter", key_code, code="Enter")

    async def enter(self) -> None:
        """A plain Enter, no composition open."""
        await self._key("keyDown", "Enter", 13, code="Enter", text="\r", unmodifiedText="\r")
        await self._key("keyUp", "Enter", 13, code="Enter")


@dataclass
class Box:
    """One of the two text boxes that send on Enter."""

    name: str
    selector: str
    open: Callable[[ChatPage], Awaitable[None]]
    stored: Callable[[httpx.AsyncClient, World], Awaitable[list[str]]]
    shown: Callable[[ChatPage, str], Locator]


async def chat_open(chat: ChatPage) -> None:
    await expect(chat.input).to_be_visible()


async def qa_open(chat: ChatPage) -> None:
    await chat.page.locator("#tab-qa").click()
    await expect(chat.page.locator("#tab-qa")).to_have_attribute("aria-selected", "true")
    await expect(chat.page.locator("#question-input")).to_be_visible()


async def chat_stored(http: httpx.AsyncClient, world: World) -> list[str]:
    return [m["content"] for m in await stored(http, world.moderator, world.webinar.id)]


async def qa_stored(http: httpx.AsyncClient, world: World) -> list[str]:
    r = await http.get(f"/api/webinars/{world.webinar.id}/questions",
                       headers=auth(world.moderator.token))
    assert r.status_code == 200, r.text
    return [q["content"] for q in r.json()["questions"]]


def chat_shown(chat: ChatPage, text: str) -> Locator:
    return chat.page.locator("#messages .msg .content").filter(has_text=text)


def qa_shown(chat: ChatPage, text: str) -> Locator:
    return chat.page.locator("#questions .question .question-content").filter(has_text=text)


BOXES = [
    pytest.param(Box("chat", "#message-input", chat_open, chat_stored, chat_shown), GREETING,
                 id="chat"),
    pytest.param(Box("qa", "#question-input", qa_open, qa_stored, qa_shown), QUESTION, id="qa"),
]


async def start(browser: Browser, server: RunningServer, world: World, box: Box
                ) -> tuple[ChatPage, Locator, Ime]:
    alice = await open_chat(browser, server, world.alice, world.webinar.id)
    await box.open(alice)
    field = alice.page.locator(box.selector)
    await alice.page.evaluate(EVENT_LOG, box.selector)
    await field.focus()
    return alice, field, Ime(await alice.page.context.new_cdp_session(alice.page))


async def events(chat: ChatPage) -> list[dict[str, Any]]:
    return await chat.page.evaluate("window.__ime.splice(0)")  # type: ignore[no-any-return]


def enter_downs(log: list[dict[str, Any]]) -> list[tuple[int, bool]]:
    return [(e["keyCode"], e["isComposing"]) for e in log
            if e["type"] == "keydown" and e["key"] == "Enter"]


async def nothing_sent(http: httpx.AsyncClient, world: World, box: Box) -> None:
    await asyncio.sleep(QUIET_S)  # a send would have gone out at once; watch a little longer
    assert await box.stored(http, world) == []


async def stored_eventually(http: httpx.AsyncClient, world: World, box: Box,
                            expected: list[str]) -> None:
    async def check() -> bool:
        return await box.stored(http, world) == expected

    await eventually(check, timeout=10, message=f"{box.name}: server never had {expected}")


@pytest.mark.parametrize(("box", "text"), BOXES)
async def test_enter_while_composing_sends_nothing_then_enter_sends_the_text_once(
        browser: Browser, server: RunningServer, world: World, http: httpx.AsyncClient, box: Box,
        text: str) -> None:
    alice, field, ime = await start(browser, server, world, box)
    last = text[-1]

    await ime.type(text)  # … 여, 러, then ㅂ → 부 → 분, still composing
    log = await events(alice)
    assert [e["data"] for e in log if e["type"] == "compositionend"] == list(
        text.replace(" ", "")[:-1])  # every syllable but the last one was committed
    # Every key was the IME's (229), and composing, except the first of the text and the first
    # after each space (no syllable open yet).
    keydowns = [e for e in log if e["type"] == "keydown"]
    assert {e["keyCode"] for e in keydowns} == {229}
    assert [e["value"] for e in keydowns if not e["isComposing"]] == [
        "", *(text[:i + 1] for i, c in enumerate(text) if c == " ")]
    await expect(field).to_have_value(text)

    # (a) Enter with the syllable still open: as an IME reports it (229), and unprocessed (13).
    for key_code in (229, 13):
        await ime.ime_enter(key_code)
        await nothing_sent(http, world, box)
        await expect(field).to_have_value(text)
        assert enter_downs(await events(alice)) == [(key_code, True)]
    assert ime.composing == last
    await expect(box.shown(alice, text)).to_have_count(0)

    # (b) The syllable is committed; the next Enter sends the whole text, once.
    await ime.commit()
    log = await events(alice)
    assert [e["data"] for e in log if e["type"] == "compositionend"] == [last]
    await expect(field).to_have_value(text)
    await ime.enter()
    assert enter_downs(await events(alice)) == [(13, False)]
    await expect(field).to_have_value("")
    await expect(box.shown(alice, text)).to_have_count(1)
    assert await box.shown(alice, text).all_text_contents() == [text]
    await stored_eventually(http, world, box, [text])
    await asyncio.sleep(QUIET_S)  # no second send trails behind
    assert await box.stored(http, world) == [text]
    await expect(box.shown(alice, text)).to_have_count(1)
    assert alice.errors == []


@pytest.mark.parametrize(("box", "text"), BOXES)
async def test_enter_that_commits_the_syllable_in_webkit_order_is_not_a_send(
        browser: Browser, server: RunningServer, world: World, http: httpx.AsyncClient, box: Box,
        text: str) -> None:
    """Safari (WebKit) ends the composition first and then fires the Enter that committed it
    as keydown keyCode 229 with isComposing false. That Enter belongs to the IME: a box that
    only looks at isComposing sends the text the user was still typing."""
    alice, field, ime = await start(browser, server, world, box)
    await ime.type(text)
    await events(alice)
    await ime.commit()
    await ime.ime_enter(229)  # fired after compositionend: isComposing is false
    assert enter_downs(await events(alice)) == [(229, False)]
    await nothing_sent(http, world, box)
    await expect(field).to_have_value(text)

    await ime.enter()
    await expect(field).to_have_value("")
    await expect(box.shown(alice, text)).to_have_count(1)
    await stored_eventually(http, world, box, [text])
