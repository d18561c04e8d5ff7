"""`/metrics` on a port of its own (METRICS_PORT), served on the process's event loop.

Under `serve --workers N` the workers share one listening socket, so a scrape of the main port
reaches whichever worker the kernel picks: each worker then serves its own metrics on
METRICS_PORT + its number, and Prometheus scrapes every one as its own target (docs/operations.md).
A single process can use it too, to keep `/metrics` off the port the public reaches.

On the loop, not in prometheus-client's thread server: the scrape-time collectors read the hub's
rooms and connections, which only the loop may touch. The protocol is the least HTTP/1.1 a
scraper needs — one GET per connection, answered and closed.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from .metrics import Metrics

log = structlog.get_logger(__name__)

READ_TIMEOUT_S = 5.0
MAX_HEAD_BYTES = 16 * 1024
CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


def _response(status: bytes, body: bytes, content_type: bytes = b"text/plain") -> bytes:
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: " + content_type
            + b"\r\ncontent-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n"
            + body)


async def _handle(metrics: Metrics, reader: asyncio.StreamReader,
                  writer: asyncio.StreamWriter) -> None:
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT_S)
        method, _, rest = head.partition(b" ")
        path = rest.partition(b" ")[0].partition(b"?")[0]
        if method not in (b"GET", b"HEAD"):
            answer = _response(b"405 Method Not Allowed", b"GET /metrics\n")
        elif path != b"/metrics":
            answer = _response(b"404 Not Found", b"GET /metrics\n")
        else:
            body = metrics.render()
            answer = _response(b"200 OK", b"" if method == b"HEAD" else body, CONTENT_TYPE)
        writer.write(answer)
        await writer.drain()
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError,
            ConnectionError):
        pass  # a scraper that went away or sent nonsense: nothing to answer
    except Exception as exc:
        metrics.http_unhandled_errors.inc()
        log.error("metrics_port_error", exc_info=exc)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def start_metrics_server(metrics: Metrics, host: str, port: int) -> asyncio.Server:
    server = await asyncio.start_server(lambda r, w: _handle(metrics, r, w), host, port,
                                        limit=MAX_HEAD_BYTES)
    log.info("metrics_listening", host=host, port=port)
    return server
