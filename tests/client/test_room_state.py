"""The SDK's room state (docs/webinar-features.md): chat mode, slow mode and the pinned
announcement set through the SDK reach a socket viewer and a long-polling one as ROOM events,
and a fresh join starts from the same state; hosts_only messages stay between their author and
staff."""

from __future__ import annotations

import pytest

from webinar_chat.client import (
    ApiError,
    ChangeType,
    ChatClient,
    ConnectionStatus,
    RoomState,
    SendRejected,
)

from ..helpers import World, eventually
from .conftest import ClientFactory
from .faults import SocketGate


async def test_room_state_converges_for_socket_and_fallback_viewers_and_a_fresh_join(
        make_client: ClientFactory, world: World) -> None:
    wid = world.webinar.id
    host: ChatClient = await make_client(world.host)
    gate = SocketGate()
    gate.set(refuse=True)
    bob: ChatClient = await make_client(world.bob, connect=gate)  # long-polls
    alice: ChatClient = await make_client(world.alice)
    alice_room = await alice.join(wid)
    bob_room = await bob.join(wid, events=False)
    await eventually(lambda: bob.status is ConnectionStatus.FALLBACK)
    assert alice_room.state == RoomState()

    await host.set_chat_mode(wid, "hosts_only")
    await host.set_slow_mode(wid, 30)
    final = await host.pin(wid, "Slides: example.com/slides")
    assert final == RoomState("hosts_only", 30, "Slides: example.com/slides", final.pinned_at)
    assert final.pinned_at is not None and final.attendees_may_post

    for room in (alice_room, bob_room):
        await eventually(lambda room=room: room.state == final, timeout=10)
    kinds = []
    while len(kinds) < 3:
        kinds.append((await alice_room.next_event()).type)
    assert kinds == [ChangeType.ROOM] * 3
    fresh = await (await make_client(world.moderator)).join(wid)
    assert fresh.state == final

    # hosts_only: Alice's message reaches staff and Alice, not Bob.
    room_host = await host.join(wid)
    private = await alice.send(wid, "Can you share the recording?")
    assert private.visibility == "staff"
    await eventually(lambda: any(m.id == private.id for m in room_host.messages))
    shout = await host.send(wid, "Recording will be mailed")
    await eventually(lambda: any(m.id == shout.id for m in bob_room.messages), timeout=10)
    assert private.id not in {m.id for m in bob_room.messages}
    assert private.id in {m.id for m in alice_room.messages}

    # read_only: attendees are refused with the reason, staff are not.
    closed = await host.set_chat_mode(wid, "read_only")
    assert not closed.attendees_may_post
    with pytest.raises(SendRejected) as refused:
        await alice.send(wid, "still there?")
    assert refused.value.code == "chat_closed"
    with pytest.raises(ApiError) as not_host:
        await alice.set_chat_mode(wid, "everyone")
    assert not_host.value.status == 403
    with pytest.raises(ValueError):
        await host.set_chat_mode(wid, "party")
    unpinned = await host.unpin(wid)
    assert unpinned.pinned is None and unpinned.chat_mode == "read_only"
    await eventually(lambda: alice_room.state == unpinned)
