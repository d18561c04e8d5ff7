"""The outermost piece of our own ASGI stack: a request id for every HTTP request, and the one
place that turns an unexpected error into the JSON 500 shape.

The request id is taken from `X-Request-ID` when the caller (a proxy, a client) sent a sane one,
else generated; it is returned in the response's `X-Request-ID` and bound into structlog's
context, so every log line written while the request runs carries `request_id`.

Unexpected errors are handled *here* rather than by a Starlette exception handler: Starlette's
`ServerErrorMiddleware` re-raises after answering, so uvicorn would log the same error a second
time, outside the request's context. Here it is logged once, with the request id, counted, and
answered `{"success": false, "error": …, "code": "internal", "request_id": …}`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import error_response
from .request_ids import REQUEST_ID_HEADER, RequestIds, sane_request_id

if TYPE_CHECKING:
    from .metrics import Metrics

log = structlog.get_logger(__name__)



def incoming_request_id(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == REQUEST_ID_HEADER:
            sane = sane_request_id(value)
            return sane.decode("ascii") if sane is not None else None
    return None


class RequestContext:
    def __init__(self, app: ASGIApp, metrics: Metrics | None = None,
                 request_ids: RequestIds | None = None) -> None:
        self.app = app
        self.metrics = metrics
        self.request_ids = request_ids or RequestIds()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = incoming_request_id(scope["headers"]) or self.request_ids.new()
        header = (REQUEST_ID_HEADER, request_id.encode("ascii"))
        response_started = False

        async def send_with_request_id(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
                message["headers"] = [*message.get("headers", ()), header]
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
            structlog.contextvars.reset_contextvars(**tokens)
