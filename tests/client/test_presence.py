"""The SDK's presence: `room.presence` follows the server's frames, `client.presence()` reads the
endpoint (and refreshes a joined room's count); refused like reading the webinar."""

from __future__ import annotations

from typing import Any

import pytest

from webinar_chat.client import ApiError, ChatClient

from ..helpers import World, eventually
from .conftest import ClientFactory


@pytest.fixture
def server_overrides() -> dict[str, Any]:
    return {"heartbeat_interval_s": 0.25, "presence_throttle_s": 0.1}


async def test_room_presence_follows_who_joins_and_leaves(make_client: ClientFactory,
                                                           world: World) -> None:
    wid = world.webinar.id
    alice: ChatClient = await make_client(world.alice)
    bob: ChatClient = await make_client(world.bob)
    room = await alice.join(wid)
    await eventually(lambda: room.presence == 1, message=f"presence {room.presence}")
    bobs = await bob.join(wid)
    await eventually(lambda: room.presence == 2 and bobs.presence == 2,
                     message=f"presence {room.presence}/{bobs.presence}")
    assert await bob.presence(wid) == 2
    await bob.leave(wid)
    await eventually(lambda: room.presence == 1, message=f"presence {room.presence}")
    # the endpoint, for a room not joined, and into a joined room's count
    assert await bob.presence(wid) == 1
    room.presence = None
    assert await alice.presence(wid) == 1 and room.presence == 1


async def test_presence_is_refused_to_those_who_may_not_read(make_client: ClientFactory,
                                                             world: World) -> None:
    outsider: ChatClient = await make_client(world.outsider)
    with pytest.raises(ApiError) as refused:
        await outsider.presence(world.webinar.id)
    assert refused.value.status == 403
