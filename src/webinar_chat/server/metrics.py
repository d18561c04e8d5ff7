"""Prometheus metrics of one server process (`GET /metrics`; docs/operations.md lists every one
with its PromQL).

One `CollectorRegistry` per app, created with it (no import-time registry: tests run many apps in
one process). Several processes are several scrape targets — each process has its own registry
and, under `serve --workers N`, its own metrics port (server/metrics_server.py) — and Prometheus
sums them; nothing is shared between processes, so none of the multi-process-mode pitfalls
(a shared directory to wipe, gauges without a mode, dead pids' files) apply.

Hot paths pay nothing for being measured: per-frame and per-poll facts are plain integers the
hub, the connections and the fast path already keep, read by `_ScrapeTime` when Prometheus
scrapes. Per-request and per-batch facts go through prometheus-client's counters and histograms.

Names follow the Prometheus conventions: `webinar_chat_` prefix, `_total` for counters (the
library adds it), seconds, and no user or webinar ids as labels: every label has a small, fixed
set of values (routes are templates, reasons are error codes, close codes are ours).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .. import logs

log = structlog.get_logger(__name__)

# What a background failure interrupted; the label values of `background_errors`.
BACKGROUND_LOOPS = ("heartbeat", "idle_sweep", "room_flush", "fanout", "gap_fetch",
                    "longpoll_answer", "access_recheck", "token_expiry", "connection_task",
                    "realtime_read", "bus_reader", "safety_poll", "sqlite_checkpoint")
# Bus counters: webinar_chat_bus_<name>_total.
BUS_COUNTERS = {
    "published": "Messages published to the bus (changes, access changes, presence, probes)",
    "published_changes": "Changes published to the bus (one per change this node committed)",
    "publish_failures": "Messages that could not be published (the feed covers them)",
    "dropped": "Messages dropped because the publish queue was full",
    "received": "Messages received from other nodes",
    "bad_messages": "Unparseable bus messages, dropped",
    "probes": "Probes sent after the bus was idle",
    "probe_timeouts": "Probes that did not come back in time (bus silent: reconnect)",
    "reconnects": "Bus (re)subscriptions after a failure",
}
# The browser client's and the SDK's monitoring events (POST /api/metrics/events); anything
# else is counted as "unknown".
CLIENT_EVENT_TYPES = ("fallback_activated", "reconnect_attempt", "send_timeout", "send_success",
                      "send_error")
# The limits of server/rate_limits.py (LIMIT_NAMES there), and the monitoring-events limit.
RATE_LIMITS = ("login_account_ip", "login_account", "login_ip", "signup_ip", "messages",
               "messages_staff", "ws_connect_ip", "ws_connect_user", "client_events")
# Message creates: from a local SQLite commit (~1 ms) to a slow PostgreSQL (seconds).
CREATE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# A batch's fan-out: from sealing it to its last subscriber's frame written.
FANOUT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
HTTP_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0)


class _LogFailures(Collector):
    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily("webinar_chat_log_failures",
                                  "Log calls that could not be formatted or written",
                                  value=logs.failures().count)


class _ScrapeTime(Collector):
    """Counters and gauges whose values live in the hub, the connections and the fast path, read
    when Prometheus scrapes. `source()` returns the app's state once its lifespan started."""

    def __init__(self, source: Callable[[], Any]) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        state = self.source()
        if state is None:
            return
        hub = state.hub
        rooms = list(hub.rooms.values())
        node = GaugeMetricFamily("webinar_chat_node_info", "This process's node id on the bus "
                                 "(tells the processes behind one address apart)",
                                 labels=["node_id"])
        node.add_metric([state.bus.node_id], 1)
        yield node
        yield GaugeMetricFamily("webinar_chat_realtime_connections",
                                "Open WebSocket connections", value=len(state.connections))
        yield GaugeMetricFamily("webinar_chat_realtime_subscriptions",
                                "Live room subscriptions over WebSocket",
                                value=sum(len(room.subscribers) for room in rooms))
        yield GaugeMetricFamily("webinar_chat_rooms_loaded", "Webinar rooms held in memory",
                                value=len(rooms))
        yield GaugeMetricFamily("webinar_chat_longpoll_parked",
                                "Long-polls waiting for a change (fast path and slow path)",
                                value=sum(room.waiters for room in rooms))
        yield CounterMetricFamily("webinar_chat_fanout_deliveries",
                                  "Frames of room changes written to WebSocket subscribers",
                                  value=hub.deliveries)
        answered = CounterMetricFamily("webinar_chat_longpoll_answered",
                                       "Long-polls (wait > 0) served, by the path that "
                                       "served them", labels=["path"])
        answered.add_metric(["fast"], state.fast_polls)
        answered.add_metric(["slow"], state.slow_polls)
        yield answered


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.background_errors = Counter(
            "webinar_chat_background_errors",
            "Errors caught in background work; the connection or room concerned was closed or "
            "reset and the loop went on", ["loop"], registry=r)
        for loop in BACKGROUND_LOOPS:
            self.background_errors.labels(loop=loop)  # export zeros: alerts see the series
        self.gap_repairs = Counter(
            "webinar_chat_gap_repairs",
            "Seq gaps in a room's live changes filled by reading the change feed", registry=r)
        self.http_unhandled_errors = Counter(
            "webinar_chat_http_unhandled_errors",
            "HTTP requests that raised an unexpected error (answered 500)", registry=r)
        self.http_requests = Counter(
            "webinar_chat_http_requests", "HTTP requests answered, by route template, method "
            "and status", ["route", "method", "status"], registry=r)
        self.http_seconds = Histogram(
            "webinar_chat_http_request_seconds", "Time to answer an HTTP request (long-polls "
            "include their wait)", ["route"], buckets=HTTP_BUCKETS, registry=r)
        self.creates = Counter(
            "webinar_chat_message_creates", "Message creates by outcome (ok, duplicate: a retry "
            "of a stored message, rejected) and the rejection's error code",
            ["outcome", "reason"], registry=r)
        for outcome in ("ok", "duplicate"):
            self.creates.labels(outcome=outcome, reason="")
        self.create_seconds = Histogram(
            "webinar_chat_message_create_seconds", "Time to store and publish a new message",
            buckets=CREATE_BUCKETS, registry=r)
        self.joins = Counter(
            "webinar_chat_realtime_joins", "WebSocket joins of a webinar, by outcome",
            ["outcome"], registry=r)
        for outcome in ("ok", "denied"):
            self.joins.labels(outcome=outcome)
        self.replayed = Counter(
            "webinar_chat_realtime_replayed_changes", "Changes replayed to joining or "
            "reconnecting sockets, by where they came from", ["source"], registry=r)
        for source in ("memory", "database"):
            self.replayed.labels(source=source)
        self.realtime_closes = Counter(
            "webinar_chat_realtime_closes", "WebSocket connections closed by the server, by "
            "close code (4008: slow consumer, 4000: heartbeat timeout)", ["code"], registry=r)
        self.fanout_batches = Counter(
            "webinar_chat_fanout_batches", "Batches of room changes fanned out", registry=r)
        self.fanout_seconds = Histogram(
            "webinar_chat_fanout_seconds", "From sealing a batch of changes to writing it to "
            "the room's last subscriber", buckets=FANOUT_BUCKETS, registry=r)
        self.slow_consumers = Counter(
            "webinar_chat_slow_consumer_disconnects", "Sockets closed because their send buffer "
            "outgrew REALTIME_MAX_BUFFER", registry=r)
        self.client_events = Counter(
            "webinar_chat_client_events", "Monitoring events reported by browser and SDK "
            "clients, by type", ["type"], registry=r)
        for event_type in (*CLIENT_EVENT_TYPES, "unknown"):
            self.client_events.labels(type=event_type)
        self.client_batches = Counter(
            "webinar_chat_client_event_batches", "Batches posted to /api/metrics/events, by "
            "outcome (ok, invalid, too_large, rate_limited)", ["outcome"], registry=r)
        self.client_sessions = Counter(
            "webinar_chat_client_sessions", "Client sessions (page loads, SDK clients) that "
            "reported monitoring events", registry=r)
        self.client_session_reconnects_max = Gauge(
            "webinar_chat_client_session_reconnect_attempts_max", "The most reconnect attempts "
            "one client session reported in the last 10 minutes", registry=r)
        self.rate_limited = Counter(
            "webinar_chat_rate_limited", "Requests refused by a rate limit (429), by limit "
            "(server/rate_limits.py; client_events: the monitoring-events limit)", ["limit"],
            registry=r)
        for limit in RATE_LIMITS:
            self.rate_limited.labels(limit=limit)
        self.rate_limiter_errors = Counter(
            "webinar_chat_rate_limiter_errors", "Rate-limit decisions taken without the shared "
            "(Redis) limiter because it failed: allowed, or by this process's own buckets",
            registry=r)
        self._bus = {name: Counter(f"webinar_chat_bus_{name}", text, registry=r)
                     for name, text in BUS_COUNTERS.items()}
        self.bus_ready = Gauge("webinar_chat_bus_ready",
                               "1 while this node's bus subscription works", registry=r)
        r.register(_LogFailures())
        self._state: Any = None
        self._http_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        r.register(_ScrapeTime(lambda: self._state))

    def attach(self, state: Any) -> None:
        """The app's state, once its lifespan started: the source of the scrape-time values."""
        self._state = state

    def http_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count and time one answered request. The labelled children are kept: a long-poll
        answer of the fast path must not pay prometheus-client's label lookup twice."""
        key = (route, method, status)
        children = self._http_children.get(key)
        if children is None:
            children = self._http_children[key] = (
                self.http_requests.labels(route=route, method=method, status=str(status)),
                self.http_seconds.labels(route=route))
        children[0].inc()
        children[1].observe(seconds)

    def bus_counter(self, name: str) -> Counter:
        return self._bus[name]

    def message_create(self, outcome: str, reason: str, seconds: float | None) -> None:
        self.creates.labels(outcome=outcome, reason=reason).inc()
        if seconds is not None:
            self.create_seconds.observe(seconds)

    def background_failure(self, loop: str, error: BaseException, **context: Any) -> None:
        """Report an error that background work caught: one log line with the traceback and the
        context (webinar_id, user_id, …), one count. The caller then closes or resets the one
        connection or room concerned and goes on."""
        log.error("background_error", loop=loop, error=f"{type(error).__name__}: {error}",
                  exc_info=error, **context)
        self.background_errors.labels(loop=loop).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
