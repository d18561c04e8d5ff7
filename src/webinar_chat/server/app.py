"""`create_app(settings)`: the Starlette application with its lifespan (store, bus, hub, timers).

Nothing is created at import time; tests build one app per test on a fresh database.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute, request_response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from ..auth.access_cache import AccessCache
from ..auth.external import ExternalConfig
from ..auth.tokens import TokenService
from ..bus import Bus, create_bus
from ..settings import Settings, resolve_jwt_secret
from ..store import open_store
from . import admin_api, http_api, moderation_api, questions_api, responses, schemas
from .access_changes import access_changed
from .client_events import ClientEventLedger
from .errors import ApiError, JSONResponse, api_error_handler, error_response
from .hub import Hub
from .identities import ExternalTokenGate, Identities
from .metrics import Metrics
from .metrics_server import start_metrics_server
from .middleware import RequestContext
from .origins import origin_policy
from .pages import content_security_policy, page_routes
from .presence import Presence, presence_endpoint
from .rate_limits import TrustedProxies, create_rate_limiter, policies_from_settings
from .realtime import heartbeat_loop, realtime_endpoint
from .request_ids import RequestIds
from .state import AppState
from .supabase_realtime import supabase_realtime_endpoint
from .text_rules import content_pattern, display_name_pattern
from .ws_protocol import text_frame

Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class Media:
    """A success answer that is not one JSON model (Prometheus text, a transcript download):
    each media type the operation can answer with its model or JSON Schema, and the headers the
    answer always carries ((name, JSON Schema, description))."""

    description: str
    content: tuple[tuple[str, type[BaseModel] | dict[str, Any]], ...]
    headers: tuple[tuple[str, dict[str, Any], str], ...] = ()


@dataclass(frozen=True)
class Endpoint:
    """One HTTP operation and what the OpenAPI document says about it: its request body, its
    answer and the errors it can give besides the ones every operation of its kind can (400 for
    a body, path or query it refuses, 413 for a body too large, 401 without a valid token, 500)."""

    method: str
    path: str
    handler: Handler
    summary: str
    response: type[BaseModel] | Media
    body: type[BaseModel] | None = None
    auth: bool = True
    statuses: tuple[int, ...] = ()
    query: tuple[tuple[str, dict[str, Any], str], ...] = ()  # (name, JSON Schema, description)


_SEQ = {"type": "integer", "format": "int64", "minimum": 0, "maximum": 2**63 - 1}
_ID = {"type": "integer", "format": "int64", "minimum": 1, "maximum": 2**63 - 1}
R = responses
_TRANSCRIPT = Media(
    "The transcript, streamed: JSON, or CSV (RFC 4180, cells that start like a formula prefixed "
    "with a single quote)",
    (("application/json", R.Transcript), ("text/csv", {"type": "string"})),
    headers=(("Content-Disposition", {"type": "string", "pattern":
              r'^attachment; filename="webinar-[0-9]+-transcript\.(json|csv)"$'},
              "A download named webinar-<id>-transcript.<format>"),
             ("Cache-Control", {"type": "string", "const": "no-store"},
              "Never stored by a browser or a proxy")))

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("POST", "/api/auth/signup", http_api.signup, "Create an account and log in",
             R.Session, schemas.Signup, auth=False, statuses=(409, 429)),
    Endpoint("POST", "/api/auth/login", http_api.login, "Log in: access + refresh token",
             R.Session, schemas.Login, auth=False, statuses=(401, 429)),
    Endpoint("POST", "/api/auth/refresh", http_api.refresh,
             "Rotate a refresh token (re-use of an old one revokes the family)", R.Session,
             schemas.Refresh, auth=False, statuses=(401,)),
    Endpoint("POST", "/api/auth/logout", http_api.logout, "Revoke the refresh token's family",
             R.Ok, schemas.Logout, auth=False),
    Endpoint("GET", "/api/me", http_api.me, "The current user and their webinars", R.Me),
    Endpoint("POST", "/api/messages/create", http_api.create_message,
             "Send a message (idempotent by clientMsgId)", R.MessageCreated,
             schemas.CreateMessage, statuses=(403, 404, 409, 429)),
    Endpoint("GET", "/api/webinars/{webinar_id}/messages", http_api.list_messages,
             "Latest page, or incremental (`after`) / history (`before`) pages; with both, the "
             "messages between them", R.MessagePage, statuses=(403, 404),
             query=(("after", _SEQ, "messages with id > after, ascending"),
                    ("before", _SEQ, "messages with id < before"),
                    ("limit", {"type": "integer", "minimum": 1, "maximum": 500, "default": 100},
                     "page size"))),
    Endpoint("GET", "/api/webinars/{webinar_id}/changes", http_api.list_changes,
             "Change feed after a seq; with `wait`, a long-poll", R.ChangePage,
             statuses=(403, 404),
             query=(("after_seq", _SEQ, "return changes with seq > after_seq (default 0)"),
                    ("wait", {"type": "number", "minimum": 0},
                     "seconds to wait for a change (LONG_POLL_MAX_WAIT, 25 by default)"),
                    ("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 500},
                     "page size"))),
    Endpoint("GET", "/api/webinars/{webinar_id}", http_api.get_webinar,
             "Webinar and the caller's role", R.WebinarAnswer, statuses=(403, 404)),
    Endpoint("GET", "/api/webinars/{webinar_id}/presence", presence_endpoint,
             "How many users are connected to the webinar now (docs/webinar-features.md, "
             "\"Presence\")", R.PresenceAnswer, statuses=(403, 404)),
    Endpoint("PATCH", "/api/webinars/{webinar_id}", http_api.update_webinar,
             "Set the chat mode and slow mode (host); a ROOM event for every viewer",
             R.WebinarAnswer, schemas.UpdateWebinar, statuses=(403, 404)),
    Endpoint("PUT", "/api/webinars/{webinar_id}/pin", http_api.set_pinned,
             "Pin an announcement, replacing any earlier one (moderator/host)", R.WebinarAnswer,
             schemas.SetPinned, statuses=(403, 404)),
    Endpoint("DELETE", "/api/webinars/{webinar_id}/pin", http_api.set_pinned,
             "Remove the pinned announcement (moderator/host)", R.WebinarAnswer,
             statuses=(403, 404)),
    Endpoint("POST", "/api/messages/{message_id}/hide", http_api.hide_message,
             "Hide or unhide a message (moderator/host)", R.MessageAnswer, schemas.HideMessage,
             statuses=(403, 404)),
    Endpoint("DELETE", "/api/messages/{message_id}", http_api.delete_message,
             "Delete a message (moderator/host, or its author)", R.Deleted, statuses=(403, 404)),
    Endpoint("GET", "/api/profiles/{user_id}", http_api.get_profile,
             "Public profile (e-mail only for self or a moderator of a shared webinar)",
             R.ProfileAnswer, statuses=(404,)),
    Endpoint("POST", "/api/admin/agencies", admin_api.create_agency, "Create an agency",
             R.AgencyAnswer, schemas.CreateAgency, statuses=(403,)),
    Endpoint("POST", "/api/admin/clients", admin_api.create_client, "Create a client",
             R.ClientAnswer, schemas.CreateClient, statuses=(403, 404)),
    Endpoint("POST", "/api/admin/webinars", admin_api.create_webinar, "Create a webinar",
             R.AdminWebinarAnswer, schemas.CreateWebinar, statuses=(403, 404)),
    Endpoint("PATCH", "/api/admin/webinars/{webinar_id}", admin_api.update_webinar,
             "Change a webinar's chat settings", R.AdminWebinarAnswer, schemas.UpdateWebinar,
             statuses=(403, 404)),
    Endpoint("POST", "/api/admin/users", admin_api.create_user, "Create a user", R.UserAnswer,
             schemas.CreateUser, statuses=(403, 409)),
    Endpoint("POST", "/api/admin/registrations", admin_api.create_registration,
             "Register a user for a webinar with a role", R.RegistrationAnswer,
             schemas.CreateRegistration, statuses=(403, 404)),
    Endpoint("POST", "/api/admin/bans", admin_api.set_banned,
             "Ban, time out (duration_s) or unban a registered user", R.Ok, schemas.SetBanned,
             statuses=(403, 404)),
    Endpoint("POST", "/api/webinars/{webinar_id}/bans", moderation_api.ban_user,
             "Time out (duration_s) or permanently ban an attendee (moderator/host, admin)",
             R.BanAnswer, schemas.Ban, statuses=(403, 404)),
    Endpoint("GET", "/api/webinars/{webinar_id}/bans", moderation_api.list_bans,
             "Banned and timed-out users now (moderator/host, admin)", R.BanList,
             statuses=(403, 404)),
    Endpoint("DELETE", "/api/webinars/{webinar_id}/bans/{user_id}", moderation_api.unban_user,
             "Unban, or end a timeout early (moderator/host, admin)", R.BanAnswer,
             statuses=(403, 404)),
    Endpoint("POST", "/api/webinars/{webinar_id}/questions", questions_api.ask_question,
             "Ask a Q&A question (idempotent by clientMsgId); a QUESTION event for every viewer",
             R.QuestionCreated, schemas.AskQuestion, statuses=(403, 404, 409, 429)),
    Endpoint("GET", "/api/webinars/{webinar_id}/questions", questions_api.list_questions,
             "The Q&A questions with the caller's own votes (attendees: no dismissed ones)",
             R.QuestionList, statuses=(403, 404),
             query=(("sort", {"type": "string", "enum": ["votes", "newest"], "default": "votes"},
                     "votes: most votes first; newest: newest first"),)),
    Endpoint("POST", "/api/questions/{question_id}/vote", questions_api.vote_question,
             "Upvote a question once, or take the vote back", R.QuestionVoted,
             schemas.VoteQuestion, statuses=(403, 404)),
    Endpoint("POST", "/api/questions/{question_id}/status", questions_api.set_question_status,
             "Mark a question answered, dismiss it or reopen it (moderator/host)",
             R.QuestionAnswer, schemas.SetQuestionStatus, statuses=(403, 404)),
    Endpoint("POST", "/api/metrics/events", http_api.client_events,
             "Monitoring events from the page and the SDK (batched; rate limited per session)",
             R.EventsAccepted, schemas.ClientEvents, statuses=(429,)),
    Endpoint("GET", "/api/webinars/{webinar_id}/export", http_api.export_transcript,
             "The whole transcript as a download, deleted messages included (moderator/host, "
             "admin; docs/export.md)", _TRANSCRIPT, statuses=(403, 404),
             query=(("format", {"type": "string", "enum": ["json", "csv"], "default": "json"},
                     "json (a Transcript document) or csv (a header row, then one row per "
                     "message)"),)),
    Endpoint("GET", "/metrics", http_api.metrics,
             "Prometheus metrics of this process (docs/operations.md)",
             Media("Prometheus text exposition format 0.0.4",
                   (("text/plain", {"type": "string"}),)), auth=False),
    Endpoint("GET", "/healthz", http_api.healthz, "Liveness", R.Health, auth=False),
    Endpoint("GET", "/readyz", http_api.readyz, "Readiness: database and bus reachable",
             R.Readiness, auth=False, statuses=(503,)),
)

_STATUS_TEXT = {200: "Success", 400: "Invalid request (the `error` says which field and why)",
                401: "Missing, invalid or expired token", 403: "Not allowed", 404: "Not found",
                409: "Conflict (duplicate)", 413: "Request body too large",
                429: "Slow mode / rate limit (see Retry-After)", 500: "Unexpected error (logged "
                "with the request id)", 503: "Not ready"}


def _statuses(ep: Endpoint) -> list[int]:
    """The error statuses of `ep`: its own, and those of every operation of its kind."""
    found = set(ep.statuses) | {500}
    if ep.body is not None or ep.query or "{" in ep.path:
        found.add(400)
    if ep.body is not None:
        found.add(413)
    if ep.auth:
        found.add(401)
    return sorted(found)


def _model_schema(model: type[BaseModel], components: dict[str, Any], *,
                  mode: Literal["validation", "serialization"]) -> dict[str, Any]:
    """`{"$ref": …}` to `model` in `components`, with the models it nests hoisted beside it
    (pydantic puts them under `$defs`, which an OpenAPI `$ref` cannot reach)."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}", mode=mode)
    components.update(schema.pop("$defs", {}))
    components[model.__name__] = schema
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _text_rules(components: dict[str, Any], settings: Settings) -> None:
    """The content and display-name rules as patterns (text_rules.py builds them from its own
    sets), and the configured maximum message length."""
    for name in ("CreateMessage", "AskQuestion", "SetPinned"):
        content = components[name]["properties"]["content"]
        content.update(maxLength=settings.max_message_length, pattern=content_pattern())
    for name in ("Signup", "CreateUser"):
        components[name]["properties"]["display_name"]["pattern"] = display_name_pattern()


def _success(response: type[BaseModel] | Media, components: dict[str, Any]) -> dict[str, Any]:
    """The 200 of an operation: its JSON model, or each media type of a `Media` answer."""
    if not isinstance(response, Media):
        return {"description": _STATUS_TEXT[200],
                "content": _json(_model_schema(response, components, mode="serialization"))}
    success: dict[str, Any] = {"description": response.description, "content": {
        media: {"schema": schema if isinstance(schema, dict)
                else _model_schema(schema, components, mode="serialization")}
        for media, schema in response.content}}
    if response.headers:
        success["headers"] = {name: {"description": description, "required": True,
                                     "schema": schema}
                              for name, schema, description in response.headers}
    return success


def openapi_document(settings: Settings) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    components: dict[str, Any] = {}
    error = _model_schema(responses.Error, components, mode="serialization")
    for ep in ENDPOINTS:
        success = _success(ep.response, components)
        op: dict[str, Any] = {"summary": ep.summary, "responses": {"200": success}}
        for status in _statuses(ep):
            body = (_model_schema(responses.Readiness, components, mode="serialization")
                    if status == 503 else error)
            op["responses"][str(status)] = {"description": _STATUS_TEXT[status],
                                            "content": _json(body)}
            if status == 429:
                op["responses"]["429"]["headers"] = {"Retry-After": {
                    "description": "Seconds to wait (whole, at least 1)", "required": True,
                    "schema": {"type": "integer", "minimum": 1}}}
        params = [{"name": name.strip("{}"), "in": "path", "required": True, "schema": _ID}
                  for name in ep.path.split("/") if name.startswith("{")]
        params += [{"name": n, "in": "query", "required": False, "description": d,
                    "schema": {**schema, "maximum": settings.long_poll_max_wait_s}
                    if n == "wait" else schema} for n, schema, d in ep.query]
        if params:
            op["parameters"] = params
        if ep.body is not None:
            op["requestBody"] = {"required": True, "content": _json(
                _model_schema(ep.body, components, mode="validation"))}
        if ep.auth:
            op["security"] = [{"bearer": []}]
        paths.setdefault(ep.path, {})[ep.method.lower()] = op
    _text_rules(components, settings)
    return {
        "openapi": "3.1.0",
        "info": {"title": "webinar-chat", "version": "0.1.0",
                 "description": "Live chat for webinars. Realtime protocol: docs/realtime.md"},
        "paths": paths,
        "components": {"schemas": components,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                                      "bearerFormat": "JWT"}}},
    }


async def _openapi(request: Request) -> Response:
    state: AppState = request.app.state.chat
    if state.openapi is None:
        # Built once per process, in a thread: it walks the Unicode tables (text_rules.py).
        state.openapi = orjson.dumps(await asyncio.to_thread(openapi_document, state.settings))
    return JSONResponse(state.openapi)


class _PathMethods:
    """One route per path, whatever its methods: an undeclared method is a 405 whose `Allow`
    lists every method of the path (with one Starlette route per method, it listed only the
    first route's), `OPTIONS` answers 204 with the same `Allow`, and a static path such as
    `/api/messages/create` is matched before `/api/messages/{message_id}` for every method.
    An ASGI app rather than a function, so that Starlette's route takes every method."""

    def __init__(self, endpoints: list[Endpoint]) -> None:
        self.handlers = {ep.method: ep.handler for ep in endpoints}
        if "GET" in self.handlers:
            self.handlers["HEAD"] = self.handlers["GET"]
        self.allow = ", ".join(sorted(self.handlers))
        self.app = request_response(self.dispatch)

    async def dispatch(self, request: Request) -> Response:
        handler = self.handlers.get(request.method)
        if handler is not None:
            return await handler(request)
        if request.method == "OPTIONS":
            return Response(status_code=204, headers={"Allow": self.allow})
        return error_response(405, "method_not_allowed", "Method not allowed",
                              headers={"Allow": self.allow})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    message = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code, str(exc.detail))
    return error_response(exc.status_code, codes.get(exc.status_code, "http_error"), message,
                          headers=dict(exc.headers) if exc.headers else None)


class SocketRoute(WebSocketRoute):
    """A `WebSocketRoute` for `endpoint(websocket)` whose endpoint is awaited straight from the
    router. Starlette's own wraps a function endpoint in three more coroutines, two closures, a
    second exception-handler wrapper and a second `WebSocket`, all kept for the socket's whole
    life (~1.5 KB of an idle socket, docs/benchmarks.md); the exception handlers are still
    applied, by ExceptionMiddleware's wrapper (the same handlers from the same scope)."""

    def __init__(self, path: str, endpoint: Callable[[WebSocket], Awaitable[None]]) -> None:
        super().__init__(path, endpoint)
        self.app = self._session

    def _session(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        return self.endpoint(WebSocket(scope, receive=receive, send=send))  # type: ignore[no-any-return]

    def handle(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:  # type: ignore[override]
        return self.app(scope, receive, send)


def build_routes(extra: list[BaseRoute] | None = None) -> list[BaseRoute]:
    by_path: dict[str, list[Endpoint]] = {}
    for ep in ENDPOINTS:
        by_path.setdefault(ep.path, []).append(ep)
    # Static paths first: they win over a parameter in the same place.
    ordered = sorted(by_path, key=lambda path: "{" in path)
    routes: list[BaseRoute] = [Route(path, _PathMethods(by_path[path])) for path in ordered]
    routes += [Route("/api/openapi.json", _openapi, methods=["GET"]),
               Route("/openapi.json", _openapi, methods=["GET"]),
               SocketRoute("/realtime", realtime_endpoint),
               # Supabase Realtime's protocol (docs/supabase.md): its clients' path, and the
               # path its server listens on behind Supabase's gateway.
               SocketRoute("/realtime/v1/websocket", supabase_realtime_endpoint),
               SocketRoute("/socket/websocket", supabase_realtime_endpoint)]
    return routes + page_routes() + (extra or [])


def create_app(settings: Settings, *, bus: Bus | None = None,
               extra_routes: list[BaseRoute] | None = None) -> Starlette:
    content_security_policy(settings)  # a PUBLIC_URL or FRAME_ANCESTORS it cannot use: fail now
    policies_from_settings(settings)  # a malformed RATE_LIMIT_*: fail now
    TrustedProxies(settings.trusted_proxies)
    origin_policy(settings.public_url, settings.realtime_allowed_origins)  # the same for origins
    external = ExternalConfig.from_settings(settings)  # EXTERNAL_JWT_* that cannot work: fail now
    metrics = Metrics()
    request_ids = RequestIds()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        store = await open_store(settings.database_url, on_error=metrics.background_failure)
        chat_bus = bus if bus is not None else create_bus(settings, metrics)
        hub = Hub(store, chat_bus, tick_s=settings.realtime_tick_ms / 1000, wire=text_frame,
                  slice_size=settings.realtime_flush_slice,
                  slice_s=settings.realtime_flush_slice_ms / 1000,
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
        identities = state.identities = Identities(tokens, store, chat_bus, external)
        await identities.start()
        presence = state.presence = Presence(hub, chat_bus, metrics, settings, wire=text_frame)
        presence.start()
        app.state.chat = state
        metrics.attach(state)
        heartbeat = asyncio.create_task(heartbeat_loop(state))
        metrics_port = (await start_metrics_server(metrics, settings.host, settings.metrics_port)
                        if settings.metrics_port else None)
        try:
            yield
        finally:
            if metrics_port is not None:
                metrics_port.close()
            heartbeat.cancel()
            presence.close()
            await identities.close()
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
                               access_log=settings.access_log),
                    # Tokens from the host platform, resolved before a route checks them.
                    Middleware(ExternalTokenGate)],
        exception_handlers={ApiError: api_error_handler, HTTPException: _http_exception},
    )
