"""`GET /metrics` and `POST /api/metrics/events` against a real server (docs/operations.md):
creates by outcome and their latency, HTTP requests by route template, the realtime and fan-out
series, and the client monitoring events with every kind of bad input they can bring."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from ..helpers import RunningServer, World, auth, eventually, metric_value, new_id, scrape, send
from ..realtime.test_realtime import realtime

EVENTS = "/api/metrics/events"


@pytest.fixture
def backend() -> str:
    return "sqlite"


@pytest.fixture
def server_overrides() -> dict[str, Any]:
    return {"client_events_per_minute": 4}


def event(kind: str, **metadata: Any) -> dict[str, Any]:
    return {"type": kind, "timestamp": "2026-12-02T06:00:00.000Z", "webinarId": None,
            "userId": None, "metadata": metadata}


async def test_creates_are_counted_by_outcome_and_timed(
        server: RunningServer, http: httpx.AsyncClient, world: World) -> None:
    wid, cmid = world.webinar.id, new_id()
    assert (await send(http, world.alice, wid, "hello", cmid)).status_code == 200
    assert (await send(http, world.alice, wid, "hello", cmid)).status_code == 409
    assert (await send(http, world.alice, wid, "   ")).status_code == 400
    assert (await send(http, world.outsider, wid, "not mine")).status_code == 403
    unauthenticated = await http.post("/api/messages/create", json={"webinarId": wid,
                                                                    "content": "x"})
    assert unauthenticated.status_code == 401
    text = await scrape(server)
    creates = "webinar_chat_message_creates_total"
    assert metric_value(text, creates, outcome="ok") == 1
    assert metric_value(text, creates, outcome="duplicate") == 1
    assert metric_value(text, creates, outcome="rejected", reason="invalid_request") == 1
    assert metric_value(text, creates, outcome="rejected", reason="unauthorized") == 1
    assert metric_value(text, creates, outcome="rejected") == 3
    assert metric_value(text, "webinar_chat_message_create_seconds_count") == 1
    assert metric_value(text, "webinar_chat_message_create_seconds_sum") > 0


async def test_http_requests_are_counted_by_route_template_never_by_path(
        server: RunningServer, http: httpx.AsyncClient, world: World) -> None:
    for webinar in (world.webinar, world.webinar, world.other_webinar):
        await http.get(f"/api/webinars/{webinar.id}/messages", headers=auth(world.alice.token))
    assert (await http.get("/no/such/page/12345")).status_code == 404
    text = await scrape(server)
    route = "/api/webinars/{webinar_id}/messages"
    requests = "webinar_chat_http_requests_total"
    assert metric_value(text, requests, route=route, method="GET", status="200") == 2
    assert metric_value(text, requests, route=route, method="GET", status="403") == 1
    assert metric_value(text, requests, route="unmatched", status="404") == 1
    assert "12345" not in text and f"/api/webinars/{world.webinar.id}/" not in text
    assert metric_value(text, "webinar_chat_http_request_seconds_count", route=route) == 3


async def test_realtime_joins_fanout_and_replays_are_measured(
        server: RunningServer, http: httpx.AsyncClient, world: World) -> None:
    wid = world.webinar.id
    async with realtime(server, world.alice.token) as alice:
        await alice.join(wid, last_seq=0)
        await alice.join(world.other_webinar.id, ref="denied")
        assert (await send(http, world.bob, wid, "to everyone")).status_code == 200
        await alice.wait_for(lambda c: len(c.events(f"webinar:{wid}:messages")) == 1)
        text = await scrape(server)
        assert metric_value(text, "webinar_chat_realtime_connections") == 1
        assert metric_value(text, "webinar_chat_realtime_subscriptions") == 1
        assert metric_value(text, "webinar_chat_realtime_joins_total", outcome="ok") == 1
        assert metric_value(text, "webinar_chat_realtime_joins_total", outcome="denied") == 1
        assert metric_value(text, "webinar_chat_fanout_deliveries_total") >= 1
        assert metric_value(text, "webinar_chat_fanout_batches_total") >= 1
        assert metric_value(text, "webinar_chat_fanout_seconds_count") >= 1
    # a reconnect from seq 0 replays the message (from memory: the room's ring holds it)
    async with realtime(server, world.bob.token) as bob:
        await bob.join(wid, last_seq=0)
        await bob.wait_for(lambda c: len(c.events()) == 1)
    text = await scrape(server)
    assert metric_value(text, "webinar_chat_realtime_replayed_changes_total") == 1
    await eventually(lambda: server.app_state.connections == set())


async def test_client_events_become_metrics_per_type_and_session(
        server: RunningServer, http: httpx.AsyncClient, world: World) -> None:
    batch = [event("fallback_activated", reason="socket silent", reconnectTries=3),
             event("reconnect_attempt", reconnectTries=1), event("reconnect_attempt"),
             event("send_timeout", clientMsgId=new_id()), event("send_success"),
             event("send_error", status=403), event("something_new")]
    r = await http.post(EVENTS, json={"sessionId": "page-1", "events": batch},
                        headers=auth(world.alice.token))
    assert r.status_code == 200, r.text
    assert r.json() == {"success": True, "accepted": 7}
    r = await http.post(EVENTS, json={"sessionId": "page-2", "events": [event("send_success")]},
                        headers=auth(world.bob.token))
    assert r.status_code == 200
    text = await scrape(server)
    events = "webinar_chat_client_events_total"
    assert metric_value(text, events, type="fallback_activated") == 1
    assert metric_value(text, events, type="reconnect_attempt") == 2
    assert metric_value(text, events, type="send_success") == 2
    assert metric_value(text, events, type="send_timeout") == 1
    assert metric_value(text, events, type="send_error") == 1
    assert metric_value(text, events, type="unknown") == 1
    assert "something_new" not in text  # an unknown type is not a label value
    assert metric_value(text, "webinar_chat_client_sessions_total") == 2
    assert metric_value(text, "webinar_chat_client_session_reconnect_attempts_max") == 2


async def test_bad_event_batches_get_clear_errors_and_change_nothing(
        server: RunningServer, http: httpx.AsyncClient, world: World) -> None:
    headers = {**auth(world.alice.token), "content-type": "application/json"}
    cases: list[tuple[bytes, int]] = [
        (b"{not json", 400),
        (orjson.dumps({"events": []}), 400),
        (orjson.dumps({"events": [event("send_success")] * 101}), 400),
        (orjson.dumps({"events": [{"type": 5}]}), 400),
        (orjson.dumps({"events": [{**event("send_success"), "webinarId": "x"}]}), 400),
        (orjson.dumps({"sessionId": "bad id with spaces", "events": [event("send_success")]}),
         400),
        (orjson.dumps({"events": [event("send_error", errorMessage="x" * 3000)]}), 413),
        (b'{"events": [' + b" " * 70_000 + b"]}", 413),
    ]
    for body, status in cases:
        r = await http.post(EVENTS, content=body, headers=headers)
        assert r.status_code == status, (body[:80], r.text)
        assert r.json()["success"] is False and r.json()["error"], r.text
    no_token = await http.post(EVENTS, json={"events": [event("send_success")]})
    assert no_token.status_code == 401
    text = await scrape(server)
    assert metric_value(text, "webinar_chat_client_events_total") == 0
    assert metric_value(text, "webinar_chat_client_event_batches_total", outcome="invalid") == 6
    assert metric_value(text, "webinar_chat_client_event_batches_total", outcome="too_large") == 2


async def test_a_session_that_posts_too_often_is_told_when_to_come_back(
        server: RunningServer, http: httpx.AsyncClient, world: World) -> None:
    body = {"sessionId": "chatty", "events": [event("send_success")]}
    for _ in range(4):  # the server's limit in this module: 4 batches a minute
        assert (await http.post(EVENTS, json=body, headers=auth(world.alice.token))
                ).status_code == 200
    limited = await http.post(EVENTS, json=body, headers=auth(world.alice.token))
    assert limited.status_code == 429
    assert limited.json()["code"] == "rate_limited"
    assert 1 <= int(limited.headers["retry-after"]) <= 15
    # another session of the same user, and another user, are not limited by it
    other = {"sessionId": "quiet", "events": [event("send_success")]}
    assert (await http.post(EVENTS, json=other, headers=auth(world.alice.token))
            ).status_code == 200
    assert (await http.post(EVENTS, json=body, headers=auth(world.bob.token))).status_code == 200
    text = await scrape(server)
    assert metric_value(text, "webinar_chat_client_event_batches_total",
                        outcome="rate_limited") == 1
    assert metric_value(text, "webinar_chat_client_events_total", type="send_success") == 6


async def test_the_openapi_document_lists_the_monitoring_routes(http: httpx.AsyncClient) -> None:
    paths = (await http.get("/api/openapi.json")).json()["paths"]
    assert set(paths[EVENTS]["post"]["responses"]) >= {"200", "400", "401", "413", "429"}
    assert "get" in paths["/metrics"]
