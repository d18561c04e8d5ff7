"""What an idle socket keeps (docs/benchmarks.md, "Idle connections"): the per-connection objects
made lean for memory still behave as the ones they replace, and are made when needed."""

from __future__ import annotations

import asyncio
import collections
import gc
import weakref
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.websockets import WebSocket
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.server import ServerProtocol

from webinar_chat.auth.tokens import TokenService
from webinar_chat.server.app import SocketRoute
from webinar_chat.server.http_protocol import WebinarChatHttpProtocol
from webinar_chat.server.identities import ExternalTokenGate
from webinar_chat.server.middleware import RequestContext
from webinar_chat.server.realtime import RealtimeConnection, token_verifier
from webinar_chat.server.ws_protocol import (
    HandshakeLogger,
    LeanEvent,
    LeanQueue,
    WebinarChatWebSocketProtocol,
)

from ..helpers import RunningServer, World, eventually, new_id, send
from .test_realtime import realtime

# --- LeanQueue: asyncio.Queue's behaviour, no container while idle --------------------------------


async def test_lean_queue_is_fifo_and_get_waits_for_a_put() -> None:
    queue = LeanQueue()
    assert queue.empty() and queue.qsize() == 0
    getter = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    assert not getter.done()
    queue.put_nowait("a")
    queue.put_nowait("b")
    assert await getter == "a"
    assert queue.qsize() == 1 and not queue.empty()
    assert await queue.get() == "b"
    with pytest.raises(asyncio.QueueEmpty):
        queue.get_nowait()


async def test_lean_queue_keeps_no_container_when_nothing_is_queued_or_waiting() -> None:
    queue = LeanQueue()
    assert queue._items is None and queue._getters is None
    getter = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    assert queue._getters is not None and len(queue._getters) == 1  # the one reader waits
    queue.put_nowait({"type": "websocket.connect"})
    assert await getter == {"type": "websocket.connect"}
    assert queue._items is None and queue._getters is None


async def test_a_cancelled_get_loses_no_item_and_wakes_the_next_getter() -> None:
    queue = LeanQueue()
    first = asyncio.create_task(queue.get())
    second = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    queue.put_nowait(1)  # wakes `first`…
    first.cancel()  # …which is cancelled before it runs: the item goes to `second`
    assert await second == 1
    with pytest.raises(asyncio.CancelledError):
        await first
    assert queue.empty() and queue._getters is None


async def test_getters_are_served_in_order() -> None:
    queue = LeanQueue()
    getters = [asyncio.create_task(queue.get()) for _ in range(3)]
    await asyncio.sleep(0)
    for item in "xyz":
        queue.put_nowait(item)
    assert await asyncio.gather(*getters) == ["x", "y", "z"]


# --- LeanEvent: asyncio.Event's behaviour, waiters only while waiting -----------------------------


async def test_lean_event_wait_set_clear() -> None:
    event = LeanEvent(True)
    assert event.is_set() and await event.wait() is True
    event.clear()
    assert not event.is_set()
    waiters = [asyncio.create_task(event.wait()) for _ in range(2)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters) and event._waiters is not None
    event.set()
    assert await asyncio.gather(*waiters) == [True, True]
    assert event._waiters is None


async def test_a_cancelled_lean_event_wait_leaves_no_waiter() -> None:
    event = LeanEvent()
    waiter = asyncio.create_task(event.wait())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert event._waiters is None


# --- the WebSocket protocol: uvicorn's attributes, shared or per connection -----------------------


def _protocols(**config: Any) -> tuple[WebSocketsSansIOProtocol, WebinarChatWebSocketProtocol,
                                      ServerState]:
    async def app(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover
        pass

    cfg = uvicorn.Config(app, ws=WebinarChatWebSocketProtocol, ws_max_size=4096, **config)
    cfg.load()
    state = ServerState()
    app_state: dict[str, Any] = {}
    loop = asyncio.get_running_loop()
    return (WebSocketsSansIOProtocol(cfg, state, app_state, _loop=loop),
            WebinarChatWebSocketProtocol(cfg, state, app_state, _loop=loop), state)


@pytest.mark.parametrize("ping_interval", [None, 20.0])
async def test_the_protocol_has_every_attribute_of_uvicorns_with_the_same_value(
        ping_interval: float | None) -> None:
    theirs, ours, state = _protocols(ws_ping_interval=ping_interval)
    for name, value in vars(theirs).items():
        mine = getattr(ours, name)
        if name == "queue":
            assert isinstance(mine, LeanQueue) and mine.empty()
        elif name == "writable":
            assert isinstance(mine, LeanEvent) and mine.is_set()
        elif name == "conn":
            assert isinstance(mine, ServerProtocol)
            assert (mine.max_message_size, mine.state) == (value.max_message_size, value.state)
        elif name == "logger":
            assert isinstance(mine, HandshakeLogger) and mine._logger is value
        else:
            assert mine == value, name
    # The values every connection of a server shares are one object's.
    other = WebinarChatWebSocketProtocol(ours.config, ServerState(), ours.app_state,
                                         _loop=ours.loop)
    again = WebinarChatWebSocketProtocol(ours.config, state, ours.app_state, _loop=ours.loop)
    assert again._shared is ours._shared and other._shared is not ours._shared
    assert ours.connections is state.connections and ours.tasks is state.tasks


async def test_a_served_socket_sets_no_attribute_its_init_did_not(
        server: RunningServer, world: World, http: httpx.AsyncClient) -> None:
    """CPython 3.11 keeps an instance's attributes inline (no dict) only for names the class's
    first instances set, at most 30: every name a connection sets later must be set in __init__."""
    async with realtime(server, world.alice.token) as alice:
        await alice.join(world.webinar.id, last_seq=0)
        await alice.send(type="heartbeat")
        await send(http, world.alice, world.webinar.id, "hello", new_id())
        await alice.wait_for(lambda c: len(c.events()) == 1)
        (connection,) = server.app_state.connections
        assert connection.raw is not None
        protocol = connection.raw._protocol
        assert isinstance(protocol, WebinarChatWebSocketProtocol)
        await asyncio.sleep(0.1)  # the heartbeat read (on the fast path: `heartbeat_at`)
        fresh = WebinarChatWebSocketProtocol(protocol.config, ServerState(), protocol.app_state,
                                             _loop=protocol.loop)
        assert set(vars(protocol)) <= set(vars(fresh)), set(vars(protocol)) - set(vars(fresh))
        assert len(vars(fresh)) <= 30
        # The handshake's request and response are let go once the handshake is over.
        assert protocol.request is None and protocol.response is None
        assert protocol.scope["headers"], "the scope keeps the request's headers"
        # The raw path writes at once: no generic queue, no writer event; no task left.
        assert connection.queue is None and connection.queue_ready is None
        await eventually(lambda: connection.tasks is None)


# --- the connection: containers of the generic path, shared verifier ------------------------------


class _FakeWebSocket:
    scope: dict[str, Any] = {"extensions": {}}


def test_the_generic_path_still_has_its_queue_and_writer_event(server: RunningServer) -> None:
    connection = RealtimeConnection(server.app_state, _FakeWebSocket())  # type: ignore[arg-type]
    assert connection.raw is None
    assert isinstance(connection.queue, collections.deque)
    assert isinstance(connection.queue_ready, asyncio.Event)
    assert connection.tasks is None


async def test_spawned_tasks_are_tracked_until_done(server: RunningServer) -> None:
    connection = RealtimeConnection(server.app_state, _FakeWebSocket())  # type: ignore[arg-type]
    release = asyncio.Event()
    connection._spawn(release.wait())
    assert connection.tasks is not None and len(connection.tasks) == 1
    (task,) = connection.tasks
    release.set()
    await task
    await asyncio.sleep(0)
    assert connection.tasks is None


def test_one_token_verifier_per_token_service() -> None:
    tokens = TokenService("s" * 40, 60)
    assert token_verifier(tokens) is token_verifier(tokens)
    assert token_verifier(TokenService("s" * 40, 60)) is not token_verifier(tokens)
    token, _ = tokens.issue_access(7)
    assert token_verifier(tokens)(token).user_id == 7


# --- no frame of a pass-through layer stays on a socket's stack -----------------------------------


async def _inner(scope: Any, receive: Any, send: Any) -> None:
    return None


@pytest.mark.parametrize("layer", [RequestContext, ExternalTokenGate])
async def test_middlewares_hand_a_websocket_on_without_a_frame_of_their_own(layer: Any) -> None:
    scope = {"type": "websocket", "headers": [], "query_string": b""}
    awaitable = layer(_inner)(scope, None, None)
    assert getattr(awaitable, "cr_code", None) is _inner.__code__  # the app's own coroutine
    await awaitable


async def test_the_socket_route_awaits_the_endpoint_itself() -> None:
    seen: list[WebSocket] = []

    async def endpoint(websocket: WebSocket) -> None:
        seen.append(websocket)

    route = SocketRoute("/x", endpoint)
    assert route.name == "endpoint" and route.endpoint is endpoint
    awaitable = route.handle({"type": "websocket", "path": "/x"}, None, None)  # type: ignore[arg-type]
    assert getattr(awaitable, "cr_code", None) is endpoint.__code__
    await awaitable
    assert isinstance(seen[0], WebSocket)


# --- token-expiry watches on one loop timer -------------------------------------------------------


async def test_deadlines_run_in_time_order_never_early_and_not_when_cancelled() -> None:
    from webinar_chat.server.deadlines import Deadlines

    loop = asyncio.get_running_loop()
    deadlines = Deadlines()
    ran: list[tuple[str, float]] = []
    asked: dict[str, float] = {}

    def at(name: str, delay: float) -> Any:
        asked[name] = loop.time() + delay
        return deadlines.call_later(delay, lambda: ran.append((name, loop.time())))

    at("c", 0.06)
    at("a", 0.02)
    dropped = at("x", 0.03)
    at("b", 0.04)
    deadlines.cancel(dropped)
    deadlines.cancel(dropped)  # twice: nothing more
    assert len(deadlines) == 3
    await eventually(lambda: len(ran) == 3, timeout=2)
    assert [name for name, _ in ran] == ["a", "b", "c"]
    assert all(when >= asked[name] for name, when in ran)
    assert len(deadlines) == 0 and deadlines._timer is None


async def test_a_deadline_scheduled_earlier_than_the_armed_one_rearms_the_timer() -> None:
    from webinar_chat.server.deadlines import Deadlines

    deadlines = Deadlines()
    ran: list[str] = []
    deadlines.call_later(30, lambda: ran.append("late"))
    deadlines.call_later(0.01, lambda: ran.append("soon"))
    await eventually(lambda: ran == ["soon"], timeout=2)
    assert len(deadlines) == 1 and deadlines._timer is not None  # armed for "late"
    (late,) = deadlines._heap
    deadlines.cancel(late)
    assert deadlines._timer is None and not deadlines._heap


async def test_a_failing_deadline_callback_does_not_stop_the_others() -> None:
    from webinar_chat.server.deadlines import Deadlines

    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    try:
        deadlines = Deadlines()
        ran: list[str] = []

        def broken() -> None:
            raise RuntimeError("injected")

        deadlines.call_later(0.01, broken)
        deadlines.call_later(0.01, lambda: ran.append("after"))
        # A callback that schedules another one (a renewed watch) on the same timer.
        deadlines.call_later(0.01, lambda: deadlines.call_later(0.01, lambda: ran.append("next")))
        await eventually(lambda: ran == ["after", "next"], timeout=2)
        assert isinstance(errors[0]["exception"], RuntimeError)
    finally:
        loop.set_exception_handler(None)


async def test_many_cancelled_deadlines_are_compacted() -> None:
    from webinar_chat.server.deadlines import COMPACT_MIN, Deadlines

    deadlines = Deadlines()
    keep = deadlines.call_later(60, lambda: None)
    entries = [deadlines.call_later(120 + i, lambda: None) for i in range(COMPACT_MIN * 2)]
    for entry in entries:
        deadlines.cancel(entry)
    assert len(deadlines._heap) <= COMPACT_MIN + 1 and len(deadlines) == 1
    deadlines.cancel(keep)
    assert not deadlines._heap and deadlines._timer is None


async def test_a_socket_watches_its_token_on_the_apps_timer(server: RunningServer,
                                                            world: World) -> None:
    async with realtime(server, world.alice.token) as alice:
        await alice.join(world.webinar.id, last_seq=0)
        (connection,) = server.app_state.connections
        assert connection.expiry_timer is not None and not connection.expiry_timer.cancelled
        assert len(server.app_state.deadlines) == 1
    await eventually(lambda: len(server.app_state.deadlines) == 0)


# --- a socket that ended is freed by reference counting, not by the garbage collector ------------


def upgraded_http_protocols(server: RunningServer) -> list[Any]:
    """HTTP protocol objects alive that no longer serve a connection (handed over to WebSocket)."""
    live = server._server.server_state.connections if server._server else set()
    return [o for o in gc.get_objects()
            if isinstance(o, WebinarChatHttpProtocol) and o not in live]


@pytest.mark.parametrize("ending", ["client_close", "client_abort", "server_close"])
async def test_a_socket_that_ended_is_freed_without_the_garbage_collector(
        server: RunningServer, world: World, http: httpx.AsyncClient, ending: str) -> None:
    """A reconnect storm ends thousands of sockets and opens thousands more: what is left in
    cycles waits for a collection, and those collections stalled the loop (docs/benchmarks.md).
    With the collector off, the server-side objects of a socket go as soon as it has ended."""
    gc.collect()
    gc.disable()
    try:
        async with realtime(server, world.bob.token) as bob:
            await bob.join(world.webinar.id, last_seq=0)
            await send(http, world.alice, world.webinar.id, "hello", new_id())
            await bob.wait_for(lambda c: len(c.events()) == 1)
            (connection,) = server.app_state.connections
            protocol = connection.raw._protocol
            objects = [weakref.ref(o) for o in (
                connection, connection.session, protocol, protocol.conn)]
            assert upgraded_http_protocols(server) == []  # the handshake's protocol went at once
            if ending == "client_abort":
                bob.ws.transport.abort()
            elif ending == "server_close":
                connection.close(4000, "heartbeat timeout")
                await bob.ws.wait_closed()
        del connection, protocol
        await eventually(lambda: not server.app_state.connections)
        await eventually(lambda: all(ref() is None for ref in objects),
                         message="objects of the ended socket are still alive (a cycle)")
    finally:
        gc.enable()
