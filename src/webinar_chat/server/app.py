"""`create_app(settings)`: the Starlette application with its lifespan (store, bus, hub, timers).

Nothing is created at import time; tests build one app per test on a fresh database.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

from ..auth.access_cache import AccessCache
from ..auth.tokens import TokenService
from ..bus import Bus, create_bus
from ..settings import Settings, resolve_jwt_secret
from ..store import open_store
from . import admin_api, http_api, schemas
from .access_changes import access_changed
from .client_events import ClientEventLedger
from .errors import ApiError, JSONResponse, api_error_handler, error_response
from .hub import Hub
from .metrics import Metrics
from .metrics_server import start_metrics_server
from .middleware import RequestContext
from .origins import origin_policy
from .pages import content_security_policy, page_routes
from .rate_limits import TrustedProxies, create_rate_limiter, policies_from_settings
from .realtime import heartbeat_loop, realtime_endpoint
from .request_ids import RequestIds
from .state import AppState
from .ws_protocol import text_frame

Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class Endpoint:
    """One HTTP route and what the OpenAPI document says about it."""

    method: str
    path: str
    handler: Handler
    summary: str
    body: type[BaseModel] | None = None
    auth: bool = True
    statuses: tuple[int, ...] = ()
    query: tuple[tuple[str, str, str], ...] = ()  # (name, type, description)


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("POST", "/api/auth/signup", http_api.signup, "Create an account and log in",
             schemas.Signup, auth=False, statuses=(400, 409, 429)),
    Endpoint("POST", "/api/auth/login", http_api.login, "Log in: access + refresh token",
             schemas.Login, auth=False, statuses=(400, 401, 429)),
    Endpoint("POST", "/api/auth/refresh", http_api.refresh,
             "Rotate a refresh token (re-use of an old one revokes the family)", schemas.Refresh,
             auth=False, statuses=(400, 401)),
    Endpoint("POST", "/api/auth/logout", http_api.logout, "Revoke the refresh token's family",
             schemas.Logout, auth=False, statuses=(400,)),
    Endpoint("GET", "/api/me", http_api.me, "The current user and their webinars", statuses=(401,)),
    Endpoint("POST", "/api/messages/create", http_api.create_message,
             "Send a message (idempotent by clientMsgId)", schemas.CreateMessage,
             statuses=(400, 401, 403, 404, 409, 429)),
    Endpoint("GET", "/api/webinars/{webinar_id}/messages", http_api.list_messages,
             "Latest page, or incremental (`after`) / history (`before`) pages",
             statuses=(400, 401, 403, 404),
             query=(("after", "integer", "messages with id > after, ascending"),
                    ("before", "integer", "messages with id < before"),
                    ("limit", "integer", "1–500, default 100"))),
    Endpoint("GET", "/api/webinars/{webinar_id}/changes", http_api.list_changes,
             "Change feed after a seq; with `wait`, a long-poll", statuses=(400, 401, 403, 404),
             query=(("after_seq", "integer", "return changes with seq > after_seq"),
                    ("wait", "number", "seconds to wait for a change (≤ 25)"),
                    ("limit", "integer", "1–1000, default 500"))),
    Endpoint("GET", "/api/webinars/{webinar_id}", http_api.get_webinar,
             "Webinar and the caller's role", statuses=(401, 403, 404)),
    Endpoint("PATCH", "/api/webinars/{webinar_id}", http_api.update_webinar,
             "Open/close the chat, set slow mode (host)", schemas.UpdateWebinar,
             statuses=(400, 401, 403, 404)),
    Endpoint("POST", "/api/messages/{message_id}/hide", http_api.hide_message,
             "Hide or unhide a message (moderator/host)", schemas.HideMessage,
             statuses=(400, 401, 403, 404)),
    Endpoint("DELETE", "/api/messages/{message_id}", http_api.delete_message,
             "Delete a message (moderator/host, or its author)", statuses=(401, 403, 404)),
    Endpoint("GET", "/api/profiles/{user_id}", http_api.get_profile,
             "Public profile (e-mail only for self or a moderator of a shared webinar)",
             statuses=(401, 404)),
    Endpoint("POST", "/api/admin/agencies", admin_api.create_agency, "Create an agency",
             schemas.CreateAgency, statuses=(400, 401, 403)),
    Endpoint("POST", "/api/admin/clients", admin_api.create_client, "Create a client",
             schemas.CreateClient, statuses=(400, 401, 403, 404)),
    Endpoint("POST", "/api/admin/webinars", admin_api.create_webinar, "Create a webinar",
             schemas.CreateWebinar, statuses=(400, 401, 403, 404)),
    Endpoint("PATCH", "/api/admin/webinars/{webinar_id}", admin_api.update_webinar,
             "Change a webinar's chat settings", schemas.UpdateWebinar,
             statuses=(400, 401, 403, 404)),
    Endpoint("POST", "/api/admin/users", admin_api.create_user, "Create a user",
             schemas.CreateUser, statuses=(400, 401, 403, 409)),
    Endpoint("POST", "/api/admin/registrations", admin_api.create_registration,
             "Register a user for a webinar with a role", schemas.CreateRegistration,
             statuses=(400, 401, 403, 404)),
    Endpoint("POST", "/api/admin/bans", admin_api.set_banned, "Ban or unban a registered user",
             schemas.SetBanned, statuses=(400, 401, 403, 404)),
    Endpoint("POST", "/api/metrics/events", http_api.client_events,
             "Monitoring events from the page and the SDK (batched; rate limited per session)",
             schemas.ClientEvents, statuses=(400, 401, 413, 429)),
    Endpoint("GET", "/metrics", http_api.metrics,
             "Prometheus metrics of this process (docs/operations.md)", auth=False),
    Endpoint("GET", "/healthz", http_api.healthz, "Liveness", auth=False),
    Endpoint("GET", "/readyz", http_api.readyz, "Readiness: database and bus reachable",
             auth=False, statuses=(503,)),
)

_STATUS_TEXT = {200: "OK", 400: "Invalid request", 401: "Missing, invalid or expired token",
                403: "Not allowed", 404: "Not found", 409: "Conflict (duplicate)",
                413: "Request body too large",
                429: "Slow mode / rate limit (see Retry-After)", 503: "Not ready"}


def openapi_document() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    schemas_out: dict[str, Any] = {
        "Error": {"type": "object", "required": ["success", "error"],
                  "properties": {"success": {"type": "boolean", "const": False},
                                 "error": {"type": "string"}, "code": {"type": "string"},
                                 "retry_after": {"type": "number", "description":
                                                 "429: seconds to wait before retrying"}}},
    }
    for ep in ENDPOINTS:
        op: dict[str, Any] = {"summary": ep.summary, "responses": {
            "200": {"description": "Success: `{success: true, …}`"}}}
        for status in ep.statuses:
            op["responses"][str(status)] = {
                "description": _STATUS_TEXT.get(status, "Error"),
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
            if status == 429:
                op["responses"]["429"]["headers"] = {"Retry-After": {
                    "description": "Seconds to wait (whole, at least 1)",
                    "schema": {"type": "integer", "minimum": 1}}}
        params = [{"name": name.strip("{}"), "in": "path", "required": True,
                   "schema": {"type": "integer"}}
                  for name in ep.path.split("/") if name.startswith("{")]
        params += [{"name": n, "in": "query", "required": False, "schema": {"type": t},
                    "description": d} for n, t, d in ep.query]
        if params:
            op["parameters"] = params
        if ep.body is not None:
            schemas_out[ep.body.__name__] = ep.body.model_json_schema(
                ref_template="#/components/schemas/{model}")
            op["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{ep.body.__name__}"}}}}
        if ep.auth:
            op["security"] = [{"bearer": []}]
        paths.setdefault(ep.path, {})[ep.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "webinar-chat", "version": "0.1.0",
                 "description": "Live chat for webinars. Realtime protocol: docs/realtime.md"},
        "paths": paths,
        "components": {"schemas": schemas_out,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                                      "bearerFormat": "JWT"}}},
    }


async def _openapi(request: Request) -> Response:
    return JSONResponse(request.app.state.openapi)


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    message = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code, str(exc.detail))
    return error_response(exc.status_code, codes.get(exc.status_code, "http_error"), message,
                          headers=dict(exc.headers) if exc.headers else None)


def build_routes(extra: list[BaseRoute] | None = None) -> list[BaseRoute]:
    routes: list[BaseRoute] = [Route(ep.path, ep.handler, methods=[ep.method]) for ep in ENDPOINTS]
    routes += [Route("/api/openapi.json", _openapi, methods=["GET"]),
               Route("/openapi.json", _openapi, methods=["GET"]),
               WebSocketRoute("/realtime", realtime_endpoint)]
    return routes + page_routes() + (extra or [])


def create_app(settings: Settings, *, bus: Bus | None = None,
               extra_routes: list[BaseRoute] | None = None) -> Starlette:
    content_security_policy(settings)  # a PUBLIC_URL or FRAME_ANCESTORS it cannot use: fail now
    policies_from_settings(settings)  # a malformed RATE_LIMIT_*: fail now
    TrustedProxies(settings.trusted_proxies)
    origin_policy(settings.public_url, settings.realtime_allowed_origins)  # the same for origins
    metrics = Metrics()
    request_ids = RequestIds()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        store = await open_store(settings.database_url)
        chat_bus = bus if bus is not None else create_bus(settings, metrics)
        hub = Hub(store, chat_bus, tick_s=settings.realtime_tick_ms / 1000, wire=text_frame,
                  slice_size=settings.realtime_flush_slice,
                  max_buffer=settings.realtime_max_buffer, metrics=metrics)
        await hub.start()
        tokens = TokenService(resolve_jwt_secret(settings), settings.access_token_ttl_s)
        access = AccessCache(store, on_error=metrics.background_failure)
        events = ClientEventLedger(metrics, settings.client_events_per_minute)
        limits = create_rate_limiter(settings, metrics)
        state = AppState(settings, store, chat_bus, hub, tokens, metrics, request_ids, access,
                         events, limits)
        hub.access_changed = lambda webinar_id, user_id: access_changed(state, webinar_id,
                                                                         user_id)
        app.state.chat = state
        metrics.attach(state)
        app.state.openapi = openapi_document()
        heartbeat = asyncio.create_task(heartbeat_loop(state))
        metrics_port = (await start_metrics_server(metrics, settings.host, settings.metrics_port)
                        if settings.metrics_port else None)
        try:
            yield
        finally:
            if metrics_port is not None:
                metrics_port.close()
            heartbeat.cancel()
            for task in list(state.background):
                task.cancel()
            for connection in list(state.connections):
                connection.close(1001, "server shutting down")
            await access.close()
            await limits.close()
            await hub.close()
            await store.close()

    return Starlette(
        routes=build_routes(extra_routes),
        lifespan=lifespan,
        # Unexpected errors: RequestContext (one log line with the request id, JSON 500).
        middleware=[Middleware(RequestContext, metrics=metrics, request_ids=request_ids,
                               access_log=settings.access_log)],
        exception_handlers={ApiError: api_error_handler, HTTPException: _http_exception},
    )
