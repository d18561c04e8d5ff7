"""examples/greeter_bot.py, run with the SDK against a real server."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path
from types import ModuleType

import httpx

from webinar_chat.auth.tokens import TokenService
from webinar_chat.client import ChatClient
from webinar_chat.store import Store

from ..helpers import Person, World, auth, eventually, password_hash, send
from .conftest import ClientFactory

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "greeter_bot.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("greeter_bot", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_greeter_welcomes_each_newcomer_once(make_client: ClientFactory, world: World,
                                                   http: httpx.AsyncClient, store: Store,
                                                   tokens: TokenService) -> None:
    greeter_bot = load_example()
    await send(http, world.alice, world.webinar.id, "I was here before the bot")
    host: ChatClient = await make_client(world.host)
    room = await host.join(world.webinar.id)
    bot = asyncio.create_task(greeter_bot.greet_newcomers(room, host.user_id))

    async def contents() -> list[str]:
        r = await http.get(f"/api/webinars/{world.webinar.id}/messages",
                           headers=auth(world.host.token))
        return [m["content"] for m in r.json()["messages"]]

    try:
        await send(http, world.bob, world.webinar.id, "hi all")
        await send(http, world.bob, world.webinar.id, "me again")
        await send(http, world.alice, world.webinar.id, "still here")
        await send(http, world.moderator, world.webinar.id, "hello from the moderator")
        welcome_bob = greeter_bot.greeting("Bob")
        welcome_mod = greeter_bot.greeting("Moderator")
        await eventually(lambda: len(room.messages) == 7)  # 1 before + 4 + 2 greetings
        stored = await contents()
        greetings = [c for c in stored if c.startswith("Welcome")]
        assert [c for c in stored if c not in greetings] == [
            "I was here before the bot", "hi all", "me again", "still here",
            "hello from the moderator"]
        assert sorted(greetings) == sorted([welcome_bob, welcome_mod])
        assert stored.index(welcome_bob) > stored.index("hi all")
        # the bot's own posts and later messages of greeted people get no greeting; a newcomer
        # who writes after them does (and, the bot being sequential, proves it saw them all)
        await host.send(world.webinar.id, "a word from the host")
        await send(http, world.bob, world.webinar.id, "third message")
        carol = await store.create_user("carol@example.test", password_hash(), "Carol")
        await store.register(world.webinar.id, carol.id, "attendee")
        token, _ = tokens.issue_access(carol.id)
        await send(http, Person(carol.id, carol.email, "Carol", token), world.webinar.id, "hi!")
        await eventually(lambda: greeter_bot.greeting("Carol") in
                         [m.content for m in room.messages])
        greetings = [c for c in await contents() if c.startswith("Welcome")]
        assert len(greetings) == 3
    finally:
        bot.cancel()
        await asyncio.gather(bot, return_exceptions=True)
