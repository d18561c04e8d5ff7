"""The SDK's monitoring events (client/monitor.py): the queue/batch/trim rules on their own, and
against the real server on a free port — what an SDK client does shows up in the server's
/metrics as `webinar_chat_client_events_total{type=…}`, and nothing is posted when reporting is
off. It uses the SDK suite's fixtures and fault seams (tests/client)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from webinar_chat.client import ChatClient, ClientConfig, ConnectionStatus, SendRejected
from webinar_chat.client.monitor import (
    EVENTS_PATH,
    MAX_METADATA_BYTES,
    EventReporter,
    PostResult,
    trim_metadata,
)
from webinar_chat.server.http_api import MAX_BODY
from webinar_chat.server.schemas import ClientEvents

from ..helpers import PASSWORD, Person, RunningServer, World, eventually
from ..helpers import test_settings as settings_for  # (so that it is not collected as a test)
from .conftest import FAST
from .faults import HOLD_RESPONSE, FaultyTransport, SocketGate

EVENTS = "webinar_chat_client_events_total"
BATCHES = "webinar_chat_client_event_batches_total"
SESSIONS = "webinar_chat_client_sessions_total"
RECONNECTS_MAX = "webinar_chat_client_session_reconnect_attempts_max"


@pytest.fixture
def backend() -> str:
    """HTTP only: the store backends are covered by tests/store (as in tests/client)."""
    return "sqlite"


@pytest.fixture
def server_overrides() -> dict[str, Any]:
    return {"heartbeat_interval_s": 0.25}  # keeps FAST's 1 s silence threshold happy


ClientFactory = Callable[..., Any]


@pytest.fixture
async def make_client(server: RunningServer) -> AsyncIterator[ClientFactory]:
    """`await make_client(person, **ChatClient kwargs)` → an entered client (FAST timings),
    closed at the end of the test."""
    async with contextlib.AsyncExitStack() as stack:

        async def factory(person: Person, server_: RunningServer = server,
                          **kwargs: Any) -> ChatClient:
            kwargs.setdefault("config", FAST)
            client = ChatClient(server_.base_url, email=person.email, password=PASSWORD,
                                **kwargs)
            return await stack.enter_async_context(client)

        yield factory


async def metric(http: httpx.AsyncClient, name: str, **labels: str) -> float:
    """A sample of the server's /metrics (summed over the label sets matching `labels`)."""
    text = (await http.get("/metrics")).text
    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples
               if sample.name == name
               and all(sample.labels.get(k) == v for k, v in labels.items()))


async def client_events(http: httpx.AsyncClient) -> dict[str, float]:
    types = ("fallback_activated", "reconnect_attempt", "send_timeout", "send_success",
             "send_error", "unknown")
    return {t: await metric(http, EVENTS, type=t) for t in types}


# --- (a) the pure part: queue cap, batches, metadata trimming, answers ---------------------------

class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_queue_keeps_the_newest_500_and_batches_carry_at_most_100_valid_events() -> None:
    reporter = EventReporter(session_id="sdk-test-1", clock=lambda: 1_700_000_000.25)
    for i in range(510):
        reporter.track("send_success", webinar_id=7, user_id=3,
                       metadata={"clientMsgId": f"m{i}", "attempts": 1})
    assert reporter.queued == 500 and reporter.dropped == 10 and reporter.tracked == 510
    assert reporter.pending()[0]["metadata"]["clientMsgId"] == "m10"  # the oldest went first

    sizes = []
    while reporter.queued:
        batch = reporter.take_batch()
        body = reporter.body(batch)
        parsed = ClientEvents.model_validate_json(body)  # the server's own schema accepts it
        assert parsed.sessionId == "sdk-test-1"
        sizes.append(len(parsed.events))
    assert sizes == [100] * 5
    first = orjson.loads(body)["events"][0]
    assert first["type"] == "send_success" and first["webinarId"] == 7 and first["userId"] == 3
    assert first["timestamp"] == "2023-11-14T22:13:20.250Z"


def test_batches_stay_below_the_servers_body_limit_with_large_metadata() -> None:
    reporter = EventReporter()
    for i in range(150):
        reporter.track("send_error", metadata={"clientMsgId": str(i), "errorMessage": "x" * 5000})
    seen = 0
    while reporter.queued:
        batch = reporter.take_batch()
        body = reporter.body(batch)
        assert len(body) <= MAX_BODY and 1 <= len(batch) <= 100
        events = ClientEvents.model_validate_json(body).events
        assert all(len(orjson.dumps(e.metadata)) <= MAX_METADATA_BYTES for e in events)
        seen += len(events)
    assert seen == 150


def test_metadata_is_trimmed_to_2048_bytes_keeping_the_small_fields() -> None:
    trimmed = trim_metadata({"clientMsgId": "abc", "status": 500, "errorMessage": "é" * 3000,
                             "detail": {"nested": ["y" * 4000]}})
    encoded = orjson.dumps(trimmed)
    assert len(encoded) <= MAX_METADATA_BYTES
    assert trimmed["clientMsgId"] == "abc" and trimmed["status"] == 500
    assert trimmed["truncated"] is True
    assert all(isinstance(v, str | int | bool) for v in trimmed.values())

    small = {"reconnectTries": 2, "delayMs": 100}
    assert trim_metadata(small) == small  # nothing to trim: unchanged, no marker

    odd = trim_metadata({"big": 2**70, "nan": float("nan"), "obj": object(), "ids": {1},
                         "many": {f"k{i}": i for i in range(1000)}})
    assert len(orjson.dumps(odd)) <= MAX_METADATA_BYTES
    assert odd["big"] == str(2**70) and odd["nan"] is None and odd["ids"] == [1]


def test_answers_requeue_drop_wait_or_switch_off() -> None:
    clock = FakeClock()
    reporter = EventReporter(monotonic=clock)
    for i in range(3):
        reporter.track("reconnect_attempt", metadata={"reconnectTries": i})

    for status in (0, 401, 503):  # no answer, token trouble, server trouble: all kept, in order
        batch = reporter.take_batch()
        assert not reporter.settle(batch, PostResult(status))
        assert [e["metadata"]["reconnectTries"] for e in reporter.pending()] == [0, 1, 2]

    assert not reporter.settle(reporter.take_batch(), PostResult(429, retry_after=30.0))
    assert reporter.queued == 3 and reporter.not_before == clock.now + 30.0

    assert reporter.settle(reporter.take_batch(), PostResult(400))  # would fail again: dropped
    assert reporter.queued == 0 and reporter.dropped == 3

    reporter.track("send_success")
    assert reporter.settle(reporter.take_batch(), PostResult(200)) and reporter.sent == 1

    reporter.track("send_success")
    reporter.track("send_success")
    assert not reporter.settle(reporter.take_batch(), PostResult(404))
    assert not reporter.enabled and reporter.queued == 0
    assert reporter.track("send_success") is None and reporter.queued == 0


def test_a_disabled_reporter_queues_nothing() -> None:
    reporter = EventReporter(enabled=False)
    assert reporter.track("send_success", metadata={"clientMsgId": "x"}) is None
    assert reporter.queued == 0 and reporter.tracked == 0


# --- (b)–(d) against the real server ---------------------------------------------------------------

async def test_a_sent_message_is_counted_by_the_server_after_close(
        make_client: ClientFactory, world: World, http: httpx.AsyncClient) -> None:
    # No background flush during the test: only the final flush of aclose() can deliver.
    alice: ChatClient = await make_client(world.alice,
                                          config=FAST.with_(metrics_flush_interval=60.0))
    room = await alice.join(world.webinar.id)
    message = await room.send("hello")
    pending = alice._reporter.pending()
    assert [e["type"] for e in pending] == ["send_success"]
    assert pending[0]["webinarId"] == world.webinar.id
    assert pending[0]["userId"] == world.alice.user_id
    assert pending[0]["metadata"]["clientMsgId"] == message.client_msg_id
    assert pending[0]["metadata"]["via"] == "http" and pending[0]["metadata"]["attempts"] == 1
    assert await metric(http, EVENTS, type="send_success") == 0

    await alice.aclose()
    assert await metric(http, EVENTS, type="send_success") == 1
    assert await metric(http, BATCHES, outcome="ok") == 1
    assert await metric(http, SESSIONS) == 1
    assert alice._reporter.sent == 1 and alice._reporter.dropped == 0


async def test_a_refused_socket_reports_reconnect_attempts_and_the_fallback(
        make_client: ClientFactory, world: World, http: httpx.AsyncClient) -> None:
    gate = SocketGate()
    gate.set(refuse=True)  # every connect is a real ECONNREFUSED
    alice: ChatClient = await make_client(
        world.alice, connect=gate, config=FAST.with_(metrics_flush_interval=0.2))
    await alice.join(world.webinar.id)
    await eventually(lambda: alice.status is ConnectionStatus.FALLBACK)

    # The background flush delivers while the client runs…
    async def server_counted_three() -> bool:
        return await metric(http, EVENTS, type="reconnect_attempt") >= 3

    await eventually(server_counted_three, timeout=5)
    assert await metric(http, EVENTS, type="fallback_activated") == 1

    # …and the final flush the rest: the server saw exactly what the client counted, from one
    # client session.
    await alice.aclose()
    counted = await client_events(http)
    assert counted["reconnect_attempt"] == alice.stats.reconnect_attempts >= 3
    assert counted["fallback_activated"] == alice.stats.fallback_activations == 1
    assert counted["unknown"] == 0
    assert await metric(http, RECONNECTS_MAX) == alice.stats.reconnect_attempts
    assert await metric(http, SESSIONS) == 1
    assert await metric(http, BATCHES, outcome="rate_limited") == 0


async def test_send_timeouts_and_refusals_are_reported(
        make_client: ClientFactory, world: World, http: httpx.AsyncClient) -> None:
    transport = FaultyTransport()
    transport.fail_next(HOLD_RESPONSE, "/api/messages/create")  # stored; the answer never comes
    alice: ChatClient = await make_client(
        world.alice, http_transport=transport,
        config=FAST.with_(send_timeout=0.5, metrics_flush_interval=60.0))
    await alice.send(world.webinar.id, "slow")  # times out once, then the retry gets its 409
    with pytest.raises(SendRejected):
        await alice.send(world.webinar.id, "")  # empty content: a permanent 400
    assert alice.stats.send_timeouts == 1 and alice.stats.send_errors == 1

    await alice.aclose()
    counted = await client_events(http)
    assert counted["send_timeout"] == 1 and counted["send_error"] == 1
    assert counted["send_success"] == 1


async def test_report_events_false_posts_nothing(
        make_client: ClientFactory, world: World, http: httpx.AsyncClient) -> None:
    transport = FaultyTransport()  # no faults: it only records what the client requests
    gate = SocketGate()
    gate.set(refuse=True)
    alice: ChatClient = await make_client(
        world.alice, http_transport=transport, connect=gate,
        config=FAST.with_(report_events=False, metrics_flush_interval=0.05))
    room = await alice.join(world.webinar.id)
    await room.send("not reported")
    await eventually(lambda: alice.stats.reconnect_attempts >= 3 and alice.fallback)
    await alice.aclose()

    assert alice.stats.sends_ok == 1 and alice.stats.fallback_activations == 1
    paths = [path for _, path in transport.handled]
    assert "/api/messages/create" in paths and EVENTS_PATH not in paths
    assert sum((await client_events(http)).values()) == 0
    assert await metric(http, BATCHES) == 0 and await metric(http, SESSIONS) == 0


async def test_a_rate_limited_client_waits_for_retry_after(
        make_client: ClientFactory, world: World, database_url: str) -> None:
    # One batch a minute per session: the second batch is answered 429, Retry-After ≈ 60 s.
    limited = RunningServer(settings_for(database_url, client_events_per_minute=1))
    await limited.start()
    try:
        async with httpx.AsyncClient(base_url=limited.base_url) as http:
            alice: ChatClient = await make_client(
                world.alice, limited, config=FAST.with_(metrics_flush_interval=0.05))
            await alice.send(world.webinar.id, "first")

            async def accepted() -> bool:
                return await metric(http, BATCHES, outcome="ok") == 1

            await eventually(accepted)
            await alice.send(world.webinar.id, "second")

            reporter = alice._reporter

            async def refused() -> bool:
                return (await metric(http, BATCHES, outcome="rate_limited") == 1
                        and reporter.not_before - time.monotonic() > 50)  # its Retry-After

            await eventually(refused)
            await alice.send(world.webinar.id, "third")
            assert reporter.queued == 2  # kept for later, not re-posted every 50 ms
            await alice.aclose()  # the final flush is inside the Retry-After window: skipped
            assert await metric(http, BATCHES, outcome="rate_limited") == 1
            assert await metric(http, EVENTS, type="send_success") == 1
    finally:
        await limited.stop()


def test_the_config_switches() -> None:
    assert ClientConfig().report_events is True
    assert ClientConfig().metrics_flush_interval == 5.0
