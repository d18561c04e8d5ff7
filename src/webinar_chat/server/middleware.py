"""The outermost piece of our own ASGI stack: a request id for every HTTP request, its access-log
line and its metrics, and the one place that turns an unexpected error into the JSON 500 shape.

The request id is taken from `X-Request-ID` when the caller (a proxy, a client) sent a sane one,
else generated; it is returned in the response's `X-Request-ID` and bound into structlog's
context, so every log line written while the request runs carries `request_id`.

Unexpected errors are handled *here* rather than by a Starlette exception handler: Starlette's
`ServerErrorMiddleware` re-raises after answering, so uvicorn would log the same error a second
time, outside the request's context. Here it is logged once, with the request id, counted, and
answered `{"success": false, "error": …, "code": "internal", "request_id": …}`.

Every request ends with one `http_request` log line (method, path, route template, status,
duration, and the user and webinar the handler bound into the context) and is counted by route
template and status. Long-polls answered by the fast path never reach this middleware; that path
writes the same line itself (http_protocol.py, `access_logged`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..logs import hot_lines
from .errors import error_response
from .request_ids import NOSNIFF, REQUEST_ID_HEADER, RequestIds, sane_request_id

if TYPE_CHECKING:
    from .metrics import Metrics

log = structlog.get_logger(__name__)
ACCESS_LOGGER = "webinar_chat.access"

# What the handlers bind into the request's log context (http_api.py) and the access line repeats.
_CONTEXT_KEYS = ("user_id", "webinar_id", "client_msg_id")


def route_template(scope: Scope) -> str:
    """`/api/webinars/{webinar_id}/changes`, never the path itself: a label with a small set."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


def log_request(method: str, path: str, route: str, status: int, started: float,
                **context: Any) -> None:
    """The access line: through `logs.hot_lines()`, which writes the pipeline's line at a
    fraction of its cost (every long-poll answer writes one)."""
    hot_lines().info(ACCESS_LOGGER, "http_request", {
        "method": method, "path": path, "route": route, "status": status,
        "duration_ms": round((time.perf_counter() - started) * 1000, 2), **context})


def incoming_request_id(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == REQUEST_ID_HEADER:
            sane = sane_request_id(value)
            return sane.decode("ascii") if sane is not None else None
    return None


class RequestContext:
    def __init__(self, app: ASGIApp, metrics: Metrics | None = None,
                 request_ids: RequestIds | None = None, access_log: bool = True) -> None:
        self.app = app
        self.metrics = metrics
        self.request_ids = request_ids or RequestIds()
        self.access_log = access_log

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] != "http":
            # Handed on, not awaited here: no frame of this middleware stays on the stack of a
            # WebSocket for its whole life (an idle socket's memory, docs/benchmarks.md).
            return self.app(scope, receive, send)
        return self._http(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        request_id = incoming_request_id(scope["headers"]) or self.request_ids.new()
        header = (REQUEST_ID_HEADER, request_id.encode("ascii"))
        response_started = False
        status = 500

        async def send_with_request_id(message: Message) -> None:
            nonlocal response_started, status
            if message["type"] == "http.response.start":
                response_started = True
                status = int(message["status"])
                headers = list(message.get("headers", ()))
                if not any(name.lower() == NOSNIFF[0] for name, _ in headers):
                    headers.append(NOSNIFF)  # (the pages set it with their other headers)
                headers.append(header)
                message["headers"] = headers
            await send(message)

        tokens = structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            await self.app(scope, receive, send_with_request_id)
        except Exception as exc:
            log.error("unhandled_error", method=scope.get("method"), path=scope.get("path"),
                      exc_info=exc)
            if self.metrics is not None:
                self.metrics.http_unhandled_errors.inc()
            if not response_started:
                response = error_response(500, "internal", "Internal server error",
                                          extra={"request_id": request_id})
                await response(scope, receive, send_with_request_id)
            # else: the status line is gone; uvicorn closes the connection (the client sees an
            # incomplete response and retries, which is safe: creates are idempotent).
        finally:
            self._done(scope, status, started, request_id)
            structlog.contextvars.unbind_contextvars(*_CONTEXT_KEYS)
            structlog.contextvars.reset_contextvars(**tokens)

    def _done(self, scope: Scope, status: int, started: float, request_id: str) -> None:
        route = route_template(scope)
        method = str(scope.get("method", ""))
        if self.access_log:
            bound = structlog.contextvars.get_contextvars()
            log_request(method, str(scope.get("path", "")), route, status, started,
                        request_id=request_id,
                        **{key: bound[key] for key in _CONTEXT_KEYS if key in bound})
        if self.metrics is not None:
            self.metrics.http_request(route, method, status, time.perf_counter() - started)
