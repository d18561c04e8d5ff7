"""Who a token names: our own access tokens, and tokens from the host platform (docs/external-auth.md).

`Identities` is the one place that turns an external JWT into a local user:
- `resolve(token)` (async) verifies ours or an external one — refetching the JWKS once for an
  unknown `kid` — provisions a local user linked to the token's (issuer, subject) on its first
  use, applies a changed display name and, when configured, the registrations the token's claims
  list; then it remembers the token in `TokenService`'s verified cache.
- The synchronous call sites (`TokenService.verify_access`: every API route's `_user_id`, the
  realtime session, `admit_websocket`; `TokenService.cached`: the long-poll fast path) then find
  the token known good. For an external token they have not seen, `verify_access` still
  verifies it synchronously (`verify_known`) and accepts it when its subject is already linked;
  a subject never provisioned is refused there, which is why the async step comes first:
- `ExternalTokenGate`, an ASGI middleware, awaits `prepare(token)` for the bearer token of every
  HTTP request and the URL token of every WebSocket handshake, and the realtime adapter awaits
  it for a token in a frame (server/realtime.py, `RealtimeConnection._prepare_token`). `prepare`
  never answers a refusal itself: the synchronous check that follows refuses with its code.

`map_claims` (pure) is the claim mapping.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
import structlog
from starlette.types import ASGIApp, Receive, Scope, Send

from ..auth.external import ExternalConfig, ExternalVerifier, JwksRefresher, UnknownKey, invalid
from ..auth.tokens import AccessClaims, TokenError, TokenService
from ..store.store import ROLES
from .text_rules import clean_display_name, display_name_key
from .ws_protocol import TOKEN_EXTENSION

if TYPE_CHECKING:
    from ..bus import Bus
    from ..store import Store

log = structlog.get_logger(__name__)

MAX_DISPLAY_NAME = 80  # as schemas.NewAccount
MAX_SUBJECT = 255
MAX_CLAIMED_WEBINARS = 100
# Subjects and applied profiles remembered per process (bounded like the verified-token cache).
MAX_REMEMBERED = 50_000
_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]{1,189}")


# --- the claim mapping (pure) --------------------------------------------------------------------

@dataclass(frozen=True)
class ExternalIdentity:
    issuer: str
    subject: str
    display_name: str
    email: str | None
    expires_at: float
    key_id: str | None
    # (webinar id, role) from the webinars claim; None: not configured (the admin API decides).
    registrations: tuple[tuple[int, str], ...] | None


def claim(payload: dict[str, Any], path: str) -> Any:
    """The claim `path`: a top-level name (also one with dots, such as a namespaced
    `https://example.com/roles`), else a dotted path into nested objects (`app_metadata.role`)."""
    if not path:
        return None
    if path in payload:
        return payload[path]
    value: Any = payload
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _name(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        return clean_display_name(value[:MAX_DISPLAY_NAME])
    except ValueError:
        return None


def _role(value: Any, default: str = "attendee") -> str:
    return value if isinstance(value, str) and value in ROLES else default


def _webinar_id(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        value = int(value)
    if isinstance(value, int) and 1 <= value <= 2**63 - 1:
        return value
    return None


def _registrations(value: Any, role: str) -> tuple[tuple[int, str], ...]:
    """A list of webinar ids (numbers or digit strings), a comma-separated string of them, or an
    object {webinar id: role}; anything else in it is skipped."""
    pairs: list[tuple[int, str]] = []
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",")]
    if isinstance(value, dict):
        items = [(_webinar_id(k), _role(v, role)) for k, v in value.items()]
    elif isinstance(value, list):
        items = [(_webinar_id(v), role) for v in value]
    else:
        items = []
    seen: set[int] = set()
    for webinar_id, webinar_role in items:
        if webinar_id is not None and webinar_id not in seen:
            seen.add(webinar_id)
            pairs.append((webinar_id, webinar_role))
    return tuple(pairs[:MAX_CLAIMED_WEBINARS])


def map_claims(payload: dict[str, Any], config: ExternalConfig, *,
               key_id: str | None = None) -> ExternalIdentity:
    """A verified token's claims as a local identity; TokenError(invalid_token) without a
    usable subject."""
    raw = claim(payload, config.subject_claim)
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = str(raw)
    if not isinstance(raw, str) or not raw.strip() or len(raw) > MAX_SUBJECT:
        raise invalid("no subject")
    subject = raw.strip()
    email_value = claim(payload, config.email_claim)
    email = (email_value.strip().lower() if isinstance(email_value, str)
             and _EMAIL.fullmatch(email_value.strip()) else None)
    name = next((n for n in map(_name, (claim(payload, c) for c in config.name_claims))
                 if n is not None), None)
    if name is None and email is not None:
        name = _name(str(email_value).strip().split("@", 1)[0])
    if name is None:
        name = f"User {subject[:8]}"
    registrations = None
    if config.webinars_claim:
        role = _role(claim(payload, config.role_claim)) if config.role_claim else "attendee"
        registrations = _registrations(claim(payload, config.webinars_claim), role)
    iss = payload.get("iss")
    issuer = config.issuer or (iss if isinstance(iss, str) else "")
    return ExternalIdentity(issuer, subject, name, email, float(payload["exp"]), key_id,
                            registrations)


# --- the service ---------------------------------------------------------------------------------

class Identities:
    def __init__(self, tokens: TokenService, store: Store, bus: Bus,
                 config: ExternalConfig | None) -> None:
        self.tokens = tokens
        self.store = store
        self.bus = bus
        self.config = config
        self.verifier = ExternalVerifier(config) if config is not None else None
        self.refresher = (JwksRefresher(self.verifier, on_keys_removed=self._keys_removed)
                          if self.verifier is not None else None)
        self._users: dict[tuple[str, str], int] = {}  # (issuer, subject) → user id
        self._applied: dict[int, tuple[str, tuple[tuple[int, str], ...] | None]] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        if self.verifier is not None:
            tokens.external = self.verify_known

    @property
    def enabled(self) -> bool:
        """Tokens from the host platform are configured."""
        return self.verifier is not None

    async def start(self) -> None:
        if self.refresher is not None:
            await self.refresher.start()

    async def close(self) -> None:
        if self.refresher is not None:
            await self.refresher.close()

    # --- verification ------------------------------------------------------------------------

    def verify_known(self, token: str) -> AccessClaims:
        """Synchronous: an external token whose subject this process has linked already
        (`TokenService.verify_access` calls it for tokens that are not ours)."""
        assert self.verifier is not None and self.config is not None
        verified = self.verifier.verify(token)
        identity = map_claims(verified.payload, self.config, key_id=verified.key_id)
        user_id = self._users.get((identity.issuer, identity.subject))
        if user_id is None:
            raise invalid("unknown user")  # `resolve` was not awaited for it
        return AccessClaims(user_id, identity.expires_at, key_id=verified.key_id or "")

    async def prepare(self, token: str) -> None:
        """`resolve`, with a refusal left to the synchronous check that follows (which gives
        the same code). Errors other than a refusal (the database) propagate."""
        if self.tokens.cached(token) is not None:
            return
        try:
            await self.resolve(token)
        except TokenError:
            pass

    async def resolve(self, token: str) -> AccessClaims:
        """Ours, or the host platform's (verified, provisioned on first use, profile and
        claimed registrations applied); remembered for the synchronous call sites."""
        cached = self.tokens.cached(token)
        if cached is not None:
            return cached
        try:
            return self.tokens.verify_own(token)
        except TokenError as exc:
            if self.verifier is None or exc.code == "token_expired":
                raise
        assert self.config is not None
        try:
            verified = self.verifier.verify(token)
        except UnknownKey as exc:
            assert self.refresher is not None
            if not await self.refresher.refetch_for(exc.key_id or ""):
                raise
            verified = self.verifier.verify(token)
        identity = map_claims(verified.payload, self.config, key_id=verified.key_id)
        user_id = await self._provision(identity)
        claims = AccessClaims(user_id, identity.expires_at, key_id=verified.key_id or "")
        self.tokens.remember(token, claims)
        return claims

    def _keys_removed(self, removed: set[str]) -> None:
        """The issuer withdrew keys: tokens they signed are verified afresh (and refused)."""
        self.tokens.forget(lambda claims: claims.key_id is not None and claims.key_id in removed)

    # --- provisioning ------------------------------------------------------------------------

    async def _provision(self, identity: ExternalIdentity) -> int:
        key = (identity.issuer, identity.subject)
        if len(self._locks) >= MAX_REMEMBERED:
            self._locks = {k: v for k, v in self._locks.items() if v.locked()}
        # One provisioning per subject at a time in this process (the database's primary key
        # decides between processes).
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            user_id = self._users.get(key)
            created = False
            if user_id is None:
                user_id = await self.store.external_identity_user(*key)
                if user_id is None:
                    name = await self._allowed_name(identity.display_name, None,
                                                    identity.subject)
                    user_id, created = await self.store.provision_external_user(
                        identity.issuer, identity.subject, identity.email, name)
                    if created:
                        log.info("external_user_provisioned", user_id=user_id,
                                 issuer=identity.issuer[:200])
                        self._applied[user_id] = (identity.display_name, None)
                if len(self._users) >= MAX_REMEMBERED:
                    self._users.clear()
                self._users[key] = user_id
            await self._apply(user_id, identity)
            return user_id

    async def _apply(self, user_id: int, identity: ExternalIdentity) -> None:
        """A later token's display name, and the registrations its claims list (each only when
        it differs from what this process applied last for the user)."""
        applied_name, applied_regs = self._applied.get(user_id, (None, None))
        if applied_name != identity.display_name:
            user = await self.store.get_user(user_id)
            if user is not None and user.display_name != identity.display_name:
                name = await self._allowed_name(identity.display_name, user.display_name,
                                                identity.subject)
                if name != user.display_name:
                    await self.store.set_display_name(user_id, name)
        if identity.registrations is not None and applied_regs != identity.registrations:
            for webinar_id, role in identity.registrations:
                found = await self.store.webinar_access(webinar_id, user_id)
                if found is None:
                    continue  # no such webinar
                registration = found[1]
                if registration is not None and registration.role == role:
                    continue
                await self.store.register(webinar_id, user_id, role)
                await self.bus.publish_access(webinar_id, user_id)
        if len(self._applied) >= MAX_REMEMBERED:
            self._applied.clear()
        self._applied[user_id] = (identity.display_name, identity.registrations)

    async def _allowed_name(self, wanted: str, current: str | None, subject: str) -> str:
        """`wanted` unless it is a host's, moderator's or admin's name (the rule of sign-ups,
        server/http_api.py): then the current name, or for a new user "User <id prefix>". The
        user's own current name is theirs to keep, whatever its case or spacing."""
        key = display_name_key(wanted)
        if current is not None and display_name_key(current) == key:
            return wanted
        if await self.store.staff_display_name_taken(key, display_name_key):
            log.info("external_display_name_reserved", subject_prefix=subject[:8])
            return current if current is not None else f"User {subject[:8]}"
        return wanted


# --- the ASGI gate -------------------------------------------------------------------------------

def scope_token(scope: Scope) -> str | None:
    """The bearer token of an HTTP request; the URL token of a WebSocket handshake (`?token=`,
    or the one our protocol took out of the URL before it was logged: ws_protocol.py)."""
    if scope["type"] == "http":
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, credentials = value.decode("latin-1").partition(" ")
                token = credentials.strip()
                return token if scheme.lower() == "bearer" and token else None
        return None
    token = scope.get("extensions", {}).get(TOKEN_EXTENSION)
    if isinstance(token, str) and token:
        return token
    query = scope.get("query_string", b"").decode("latin-1")
    for part in query.split("&"):
        name, _, value = part.partition("=")
        if name == "token" and value:
            from urllib.parse import unquote_plus

            return unquote_plus(value)
    return None


class ExternalTokenGate:
    """Resolves a host-platform token before its request or handshake reaches a route, so that
    the routes' synchronous checks find it (the module's docstring). Nothing to do — and no
    cost beyond a lookup — while external tokens are off or the token is known good."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] in ("http", "websocket"):
            state = getattr(scope["app"].state, "chat", None) if "app" in scope else None
            identities: Identities | None = getattr(state, "identities", None)
            if identities is not None and identities.enabled:
                token = scope_token(scope)
                if token:
                    return self._prepared(identities, token, scope, receive, send)
        # Nothing to resolve: handed on, not awaited here, so that no frame of this middleware
        # stays on the stack of a WebSocket for its whole life.
        return self.app(scope, receive, send)

    async def _prepared(self, identities: Identities, token: str, scope: Scope, receive: Receive,
                        send: Send) -> None:
        await identities.prepare(token)
        await self.app(scope, receive, send)


def frame_token(text: str) -> str | None:
    """The `token` of a realtime frame (`auth`, a join's), if it has one, without judging the
    frame otherwise (the session does)."""
    if '"token"' not in text:
        return None
    try:
        frame = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    token = frame.get("token") if isinstance(frame, dict) else None
    return token if isinstance(token, str) and token else None
