"""The SDK's timeout / ban / unban, and the typed refusals a timed-out or banned user gets."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from webinar_chat.client import ApiError, Banned, ChatClient, JoinError, SendRejected

from ..helpers import World, eventually
from .conftest import ClientFactory


async def test_staff_time_out_ban_and_unban_through_the_sdk(make_client: ClientFactory,
                                                            world: World) -> None:
    host: ChatClient = await make_client(world.host)
    bob: ChatClient = await make_client(world.bob)
    wid = world.webinar.id
    room = await bob.join(wid)
    await room.send("before")
    until = await host.timeout(wid, world.bob.user_id, 60)
    assert until is not None
    assert timedelta(seconds=58) < until - datetime.now(UTC) < timedelta(seconds=61)
    assert [b["user_id"] for b in await host.bans(wid)] == [world.bob.user_id]
    # his live room ends with a JoinError that says why and until when
    with pytest.raises(JoinError) as ended:
        async with asyncio.timeout(5):
            while True:
                await room.next_event()
    assert ended.value.code == "timed_out" and ended.value.banned
    assert ended.value.banned_until == until
    # the SDK's own requests: typed errors with the same time
    with pytest.raises(JoinError) as join:
        await bob.join(wid)
    assert join.value.code == "timed_out" and join.value.banned_until == until
    with pytest.raises(Banned) as me:
        await bob._api.get(f"/api/webinars/{wid}")
    assert me.value.status == 403 and me.value.banned_until == until
    with pytest.raises(SendRejected) as sent:
        await bob.send(wid, "during")
    assert sent.value.code == "timed_out" and sent.value.banned_until == until
    # a permanent ban, then an unban
    await host.ban(wid, world.bob.user_id)
    with pytest.raises(Banned) as banned:
        await bob._api.get(f"/api/webinars/{wid}")
    assert banned.value.code == "banned" and banned.value.banned_until is None
    await host.unban(wid, world.bob.user_id)
    assert await host.bans(wid) == []
    back = await bob.join(wid)
    assert [m.content for m in back.messages] == ["before"]
    # staff cannot be banned, and attendees cannot ban
    with pytest.raises(ApiError) as staff:
        await host.ban(wid, world.moderator.user_id)
    assert staff.value.status == 403 and not staff.value.banned
    with pytest.raises(ApiError) as attendee:
        await bob.timeout(wid, world.alice.user_id, 10)
    assert attendee.value.status == 403
    with pytest.raises(ValueError):
        await host.timeout(wid, world.bob.user_id, 0)


async def test_a_timeout_ends_by_itself_for_the_sdk(make_client: ClientFactory,
                                                    world: World) -> None:
    host: ChatClient = await make_client(world.host)
    bob: ChatClient = await make_client(world.bob)
    wid = world.webinar.id
    until = await host.timeout(wid, world.bob.user_id, 1)
    assert until is not None
    with pytest.raises(JoinError):
        await bob.join(wid)
    await asyncio.sleep(max(0.0, (until - datetime.now(UTC)).total_seconds()) + 0.1)

    async def joined() -> bool:
        try:
            await bob.join(wid)
        except JoinError:
            return False
        return True

    await eventually(joined, timeout=3, interval=0.2)
