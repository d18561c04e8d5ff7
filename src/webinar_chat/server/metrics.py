"""Prometheus metrics of one application instance (`GET /metrics`).

One `CollectorRegistry` per app, created in the lifespan (no import-time registry: tests run many
apps in one process). Only process-wide facts — log calls that failed — are read from their
process-wide owner at scrape time. Names follow the Prometheus conventions: `webinar_chat_`
prefix, `_total` for counters, no user or webinar ids as labels.

This is the set the liveness work needs (docs/operations.md); the full operations set (HTTP,
fan-out, long-poll, bus) and several processes are built on it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from .. import logs

log = structlog.get_logger(__name__)

# What a background failure interrupted; the label values of `background_errors`.
BACKGROUND_LOOPS = ("heartbeat", "idle_sweep", "room_flush", "fanout", "gap_fetch",
                    "longpoll_answer", "access_recheck", "token_expiry", "connection_task",
                    "realtime_read", "bus_reader", "safety_poll")
# Bus counters: webinar_chat_bus_<name>_total.
BUS_COUNTERS = {
    "published": "Messages published to the bus (one per change or access change)",
    "publish_failures": "Messages that could not be published (the feed covers them)",
    "dropped": "Messages dropped because the publish queue was full",
    "received": "Messages received from other nodes",
    "bad_messages": "Unparseable bus messages, dropped",
    "probes": "Probes sent after the bus was idle",
    "probe_timeouts": "Probes that did not come back in time (bus silent: reconnect)",
    "reconnects": "Bus (re)subscriptions after a failure",
}


class _LogFailures(Collector):
    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily("webinar_chat_log_failures",
                                  "Log calls that could not be formatted or written",
                                  value=logs.failures().count)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.background_errors = Counter(
            "webinar_chat_background_errors",
            "Errors caught in background work; the connection or room concerned was closed or "
            "reset and the loop went on", ["loop"], registry=self.registry)
        for loop in BACKGROUND_LOOPS:
            self.background_errors.labels(loop=loop)  # export zeros: alerts see the series
        self.gap_repairs = Counter(
            "webinar_chat_gap_repairs",
            "Seq gaps in a room's live changes filled by reading the change feed",
            registry=self.registry)
        self.http_unhandled_errors = Counter(
            "webinar_chat_http_unhandled_errors",
            "HTTP requests that raised an unexpected error (answered 500)", registry=self.registry)
        self._bus = {name: Counter(f"webinar_chat_bus_{name}", text, registry=self.registry)
                     for name, text in BUS_COUNTERS.items()}
        self.bus_ready = Gauge("webinar_chat_bus_ready",
                               "1 while this node's bus subscription works", registry=self.registry)
        self.registry.register(_LogFailures())

    def bus_counter(self, name: str) -> Counter:
        return self._bus[name]

    def background_failure(self, loop: str, error: BaseException, **context: Any) -> None:
        """Report an error that background work caught: one log line with the traceback and the
        context (webinar_id, user_id, …), one count. The caller then closes or resets the one
        connection or room concerned and goes on."""
        log.error("background_error", loop=loop, error=f"{type(error).__name__}: {error}",
                  exc_info=error, **context)
        self.background_errors.labels(loop=loop).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
