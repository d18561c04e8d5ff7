"""The SDK against a real server: log in, join, send, receive, history, resume, moderation."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from webinar_chat.client import (
    AuthenticationError,
    ChangeType,
    ChatClient,
    ClientClosed,
    ConnectionStatus,
    JoinError,
    SendRejected,
)
from webinar_chat.store import Store

from ..helpers import PASSWORD, RunningServer, World, auth, eventually, send
from .conftest import FAST, ClientFactory
from .support import Collector


async def test_send_and_receive_between_two_clients(make_client: ClientFactory,
                                                    world: World) -> None:
    alice: ChatClient = await make_client(world.alice)
    bob: ChatClient = await make_client(world.bob)
    assert alice.user_id == world.alice.user_id and alice.user["display_name"] == "Alice"
    alice_room = await alice.join(world.webinar.id)
    bob_room = await bob.join(world.webinar.id)
    assert alice_room.role == "attendee" and alice_room.messages == []
    await eventually(lambda: alice.status is ConnectionStatus.LIVE)

    sent = await bob_room.send("  Hello from Bob  ")
    assert sent.content == "Hello from Bob" and sent.user_id == world.bob.user_id
    assert sent.client_msg_id is not None and sent.display_name == "Bob"
    # the sender sees its own message at once, from the answer, not from the feed
    assert [m.id for m in bob_room.messages] == [sent.id]

    async with asyncio.timeout(5):
        event = await alice_room.next_event()
    assert event.type is ChangeType.INSERT and event.seq == sent.seq
    assert event.new is not None and event.new.id == sent.id
    assert event.new.content == "Hello from Bob" and event.new.display_name == "Bob"
    assert [m.content for m in alice_room.messages] == ["Hello from Bob"]
    assert alice.stats.fallback_activations == 0 and alice.stats.polls == 0


async def test_join_loads_history_then_yields_only_later_changes(
        make_client: ClientFactory, world: World, http: httpx.AsyncClient) -> None:
    for text in ("one", "two", "three"):
        assert (await send(http, world.bob, world.webinar.id, text)).status_code == 200
    alice: ChatClient = await make_client(world.alice)
    room = await alice.join(world.webinar.id)
    assert [m.content for m in room.messages] == ["one", "two", "three"]
    assert room.last_seq == 3
    collector = Collector(room)
    await send(http, world.bob, world.webinar.id, "four")
    await eventually(lambda: collector.inserted == ["four"])
    collector.assert_exactly_once_in_order(first_seq=4)


async def test_join_after_seq_replays_every_change_since(
        make_client: ClientFactory, world: World, http: httpx.AsyncClient) -> None:
    first = (await send(http, world.bob, world.webinar.id, "a")).json()["message"]
    await send(http, world.bob, world.webinar.id, "b")
    r = await http.delete(f"/api/messages/{first['id']}", headers=auth(world.bob.token))
    assert r.status_code == 200
    alice: ChatClient = await make_client(world.alice)
    room = await alice.join(world.webinar.id, after_seq=0)
    collector = Collector(room)
    await eventually(lambda: len(collector.events) == 3)
    collector.assert_exactly_once_in_order()
    # replay carries current state: the deleted message's INSERT comes with new=None
    assert [e.type for e in collector.events] == [ChangeType.INSERT, ChangeType.INSERT,
                                                  ChangeType.DELETE]
    assert collector.events[0].new is None and collector.events[0].message_id == first["id"]
    assert [m.content for m in room.messages] == ["b"]


async def test_moderation_reaches_attendees_and_staff_views(make_client: ClientFactory,
                                                            world: World) -> None:
    moderator: ChatClient = await make_client(world.moderator)
    alice: ChatClient = await make_client(world.alice)
    mod_room = await moderator.join(world.webinar.id)
    alice_room = await alice.join(world.webinar.id)
    assert mod_room.role == "moderator"
    spam = await alice_room.send("buy cheap watches")
    keep = await alice_room.send("a real question")
    await eventually(lambda: len(mod_room.messages) == 2)

    hidden = await moderator.hide(spam.id)
    assert hidden.hidden
    await eventually(lambda: [m.id for m in alice_room.messages] == [keep.id])
    await eventually(lambda: mod_room.conversation.get(spam.id) is not None
                     and mod_room.conversation.get(spam.id).hidden)  # type: ignore[union-attr]

    await moderator.hide(spam.id, hidden=False)
    await eventually(lambda: [m.id for m in alice_room.messages] == [spam.id, keep.id])
    await alice.delete(keep.id)
    await eventually(lambda: [m.id for m in mod_room.messages] == [spam.id])
    await eventually(lambda: [m.id for m in alice_room.messages] == [spam.id])


async def test_permanent_refusals_raise_typed_errors_and_store_nothing(
        make_client: ClientFactory, world: World, http: httpx.AsyncClient) -> None:
    alice: ChatClient = await make_client(world.alice)
    with pytest.raises(SendRejected) as empty:
        await alice.send(world.webinar.id, "   ")
    assert empty.value.status == 400 and empty.value.code == "invalid_request"
    with pytest.raises(SendRejected) as other:
        await alice.send(world.other_webinar.id, "not mine")
    assert other.value.status == 403 and other.value.client_msg_id
    r = await http.patch(f"/api/webinars/{world.webinar.id}", json={"chat_open": False},
                         headers=auth(world.host.token))
    assert r.status_code == 200
    with pytest.raises(SendRejected) as closed:
        await alice.send(world.webinar.id, "is anyone there?")
    assert closed.value.status == 403
    listed = await http.get(f"/api/webinars/{world.webinar.id}/messages",
                            headers=auth(world.host.token))
    assert listed.json()["messages"] == []
    assert alice.stats.send_errors == 3 and alice.stats.send_retries == 0


async def test_slow_mode_429_waits_retry_after_then_succeeds(make_client: ClientFactory,
                                                             world: World,
                                                             http: httpx.AsyncClient) -> None:
    r = await http.patch(f"/api/webinars/{world.webinar.id}", json={"slow_mode_seconds": 1},
                         headers=auth(world.host.token))
    assert r.status_code == 200
    alice: ChatClient = await make_client(world.alice)
    await alice.send(world.webinar.id, "first")
    second = await alice.send(world.webinar.id, "second")
    assert second.content == "second"
    assert alice.stats.send_retries >= 1
    listed = await http.get(f"/api/webinars/{world.webinar.id}/messages",
                            headers=auth(world.alice.token))
    assert [m["content"] for m in listed.json()["messages"]] == ["first", "second"]


async def test_join_refusals(make_client: ClientFactory, world: World) -> None:
    alice: ChatClient = await make_client(world.alice)
    with pytest.raises(JoinError) as forbidden:
        await alice.join(world.other_webinar.id)
    assert forbidden.value.status == 403
    with pytest.raises(JoinError) as missing:
        await alice.join(999_999)
    assert missing.value.status == 404
    await alice.join(world.webinar.id)
    with pytest.raises(ValueError):
        await alice.join(world.webinar.id)


async def test_wrong_password_is_an_authentication_error(server: RunningServer,
                                                         world: World) -> None:
    with pytest.raises(AuthenticationError) as exc:
        async with ChatClient(server.base_url, email=world.alice.email, password="wrong",
                              config=FAST):
            pass
    assert exc.value.status == 401 and exc.value.code == "invalid_credentials"
    with pytest.raises(ValueError):
        ChatClient(server.base_url, email=world.alice.email)


async def test_given_tokens_work_without_credentials(make_client: ClientFactory, world: World,
                                                     http: httpx.AsyncClient) -> None:
    login = (await http.post("/api/auth/login", json={"email": world.bob.email,
                                                      "password": PASSWORD})).json()
    bob: ChatClient = await make_client(world.bob, access_token=login["access_token"],
                                        refresh_token=login["refresh_token"])
    assert bob.user_id == world.bob.user_id
    message = await bob.send(world.webinar.id, "with a token")
    assert message.user_id == world.bob.user_id


async def test_leave_and_close_end_the_iterators(make_client: ClientFactory, world: World,
                                                 server: RunningServer) -> None:
    alice: ChatClient = await make_client(world.alice)
    room = await alice.join(world.webinar.id)
    collector = Collector(room)
    await alice.leave(world.webinar.id)
    await asyncio.wait_for(collector.task, 5)
    assert collector.error is None and alice.rooms == {}
    room = await alice.join(world.webinar.id)  # joining again is allowed after leaving
    collector = Collector(room)
    await alice.aclose()
    await asyncio.wait_for(collector.task, 5)
    assert alice.status is ConnectionStatus.CLOSED
    with pytest.raises(ClientClosed):
        await alice.send(world.webinar.id, "too late")
    with pytest.raises(ClientClosed):
        await room.next_event()


async def test_close_logs_out_the_refresh_token(server: RunningServer, world: World,
                                                http: httpx.AsyncClient) -> None:
    client = ChatClient(server.base_url, email=world.alice.email, password=PASSWORD,
                        config=FAST)
    async with client:
        refresh = client._auth._tokens.refresh_token  # type: ignore[union-attr]
    r = await http.post("/api/auth/refresh", json={"refresh_token": refresh})
    assert r.status_code == 401


async def test_a_slow_consumer_loses_nothing(make_client: ClientFactory, world: World,
                                             http: httpx.AsyncClient) -> None:
    """More events than the buffer holds: the room stops taking them, then fetches them again
    from /changes when the consumer catches up — in order, once each."""
    alice: ChatClient = await make_client(world.alice, config=FAST.with_(event_buffer=4))
    room = await alice.join(world.webinar.id)
    await eventually(lambda: alice.status is ConnectionStatus.LIVE)
    for i in range(15):
        await send(http, world.bob, world.webinar.id, f"m{i}")
    await eventually(lambda: room.last_seq == 4)  # full: stopped taking events
    collector = Collector(room)
    await eventually(lambda: len(collector.events) == 15)
    collector.assert_exactly_once_in_order()
    assert collector.inserted == [f"m{i}" for i in range(15)]
    assert alice.stats.gap_fetches >= 1
    assert len(room.messages) == 15


async def test_on_change_callback_without_iterating(make_client: ClientFactory, world: World,
                                                    http: httpx.AsyncClient) -> None:
    seen: list[Any] = []

    def broken(event: Any) -> None:
        seen.append(event.seq)
        raise RuntimeError("a bug in the callback must not stop delivery")

    alice: ChatClient = await make_client(world.alice)
    room = await alice.join(world.webinar.id, events=False, on_change=broken)
    for i in range(3):
        await send(http, world.bob, world.webinar.id, f"m{i}")
    await eventually(lambda: seen == [1, 2, 3])
    assert [m.content for m in room.messages] == ["m0", "m1", "m2"]
    with pytest.raises(RuntimeError):
        await room.next_event()


async def test_two_webinars_share_one_socket(make_client: ClientFactory, world: World,
                                             store: Store, http: httpx.AsyncClient) -> None:
    second = await store.create_webinar(world.webinar.client_id, "Second session")
    for person in (world.alice, world.bob):
        await store.register(second.id, person.user_id, "attendee")
    alice: ChatClient = await make_client(world.alice)
    first_room = await alice.join(world.webinar.id)
    first = Collector(first_room)
    await eventually(lambda: alice.status is ConnectionStatus.LIVE)
    second_room = await alice.join(second.id)  # joined on the open socket
    other = Collector(second_room)
    await send(http, world.bob, second.id, "in the second webinar")
    await send(http, world.bob, world.webinar.id, "in the first webinar")
    await eventually(lambda: first.inserted == ["in the first webinar"]
                     and other.inserted == ["in the second webinar"])
    assert alice.stats.socket_connects == 1
    await alice.leave(second.id)
    await send(http, world.bob, world.webinar.id, "still delivered")
    await eventually(lambda: first.inserted[-1:] == ["still delivered"])
    assert other.inserted == ["in the second webinar"] and other.task.done()


class TestTopicsPerSocket:
    @pytest.fixture
    def server_overrides(self) -> dict[str, Any]:
        return {"heartbeat_interval_s": 0.25, "realtime_max_topics": 1}

    async def test_a_room_beyond_the_servers_topic_cap_fails_and_the_others_stay_live(
            self, make_client: ClientFactory, world: World, store: Store,
            http: httpx.AsyncClient) -> None:
        second = await store.create_webinar(world.webinar.client_id, "Second session")
        await store.register(second.id, world.alice.user_id, "attendee")
        alice: ChatClient = await make_client(world.alice)
        first = Collector(await alice.join(world.webinar.id))
        await eventually(lambda: alice.status is ConnectionStatus.LIVE)
        refused = await alice.join(second.id)
        with pytest.raises(JoinError) as info:
            async with asyncio.timeout(5):
                await refused.next_event()
        assert (info.value.status, info.value.code) == (400, "too_many_topics")
        await send(http, world.bob, world.webinar.id, "still live")
        await eventually(lambda: first.inserted == ["still live"])
        assert alice.status is ConnectionStatus.LIVE and alice.stats.socket_connects == 1
