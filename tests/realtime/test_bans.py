"""A timeout on the open socket: delivery stops at once with the reason and the end, a join during
the timeout says the same, and after it the same socket joins again and replays what it missed."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import httpx
import pytest

from ..helpers import RunningServer, World, auth, new_id, send
from .test_realtime import realtime, seqs


@pytest.fixture
def backend() -> str:
    return "sqlite"


async def test_a_timed_out_socket_stops_at_once_and_gets_back_in_after_the_timeout(
        server: RunningServer, world: World, http: httpx.AsyncClient) -> None:
    wid = world.webinar.id
    async with realtime(server, world.bob.token) as bob, \
            realtime(server, world.alice.token) as witness:
        await bob.join(wid, last_seq=0, ref="first")
        await witness.join(wid, last_seq=0)
        assert (await send(http, world.alice, wid, "before", new_id())).status_code == 200
        await bob.wait_for(lambda c: seqs(c.events()) == [1])
        loop = asyncio.get_running_loop()
        started = loop.time()
        r = await http.post(f"/api/webinars/{wid}/bans",
                            json={"user_id": world.bob.user_id, "duration_s": 2},
                            headers=auth(world.host.token))
        assert r.status_code == 200, r.text
        banned_until = r.json()["ban"]["banned_until"]
        await bob.wait_for(lambda c: bool(c.of_type("error")), timeout=2)
        assert loop.time() - started < 1.0  # at once, not at a cache's expiry
        error = bob.of_type("error")[0]
        assert error["code"] == "timed_out" and error["banned_until"] == banned_until
        assert error["topic"] == f"webinar:{wid}:messages" and error["ref"] == "first"
        # nothing more reaches him while the witness beside him gets it
        assert (await send(http, world.alice, wid, "during", new_id())).status_code == 200
        await witness.wait_for(lambda c: seqs(c.events()) == [1, 2])
        await asyncio.sleep(0.2)
        assert seqs(bob.events()) == [1]
        # a join during the timeout: the same error
        await bob.join(wid, last_seq=1, ref="again")
        again = [f for f in bob.of_type("error") if f.get("ref") == "again"]
        assert again and again[0]["code"] == "timed_out"
        assert again[0]["banned_until"] == banned_until
        # after the timeout the socket joins again and replays what it missed
        end = datetime.fromisoformat(banned_until.replace("Z", "+00:00"))
        await asyncio.sleep(max(0.0, (end - datetime.now(UTC)).total_seconds()) + 0.1)
        await bob.join(wid, last_seq=1, ref="back")
        assert any(f.get("ref") == "back" for f in bob.of_type("joined")), bob.frames[-3:]
        await bob.wait_for(lambda c: seqs(c.events()) == [1, 2])
        assert (await send(http, world.alice, wid, "after", new_id())).status_code == 200
        await bob.wait_for(lambda c: seqs(c.events()) == [1, 2, 3])


async def test_a_ban_frame_says_permanent_and_an_unban_lets_the_socket_back_in(
        server: RunningServer, world: World, http: httpx.AsyncClient) -> None:
    wid = world.webinar.id
    async with realtime(server, world.bob.token) as bob:
        await bob.join(wid, last_seq=0)
        r = await http.post(f"/api/webinars/{wid}/bans",
                            json={"user_id": world.bob.user_id, "duration_s": None},
                            headers=auth(world.moderator.token))
        assert r.status_code == 200
        await bob.wait_for(lambda c: bool(c.of_type("error")), timeout=2)
        error = bob.of_type("error")[0]
        assert error["code"] == "banned" and error["banned_until"] is None
        r = await http.delete(f"/api/webinars/{wid}/bans/{world.bob.user_id}",
                              headers=auth(world.moderator.token))
        assert r.status_code == 200
        await bob.join(wid, last_seq=0, ref="back")
        assert any(f.get("ref") == "back" for f in bob.of_type("joined"))
