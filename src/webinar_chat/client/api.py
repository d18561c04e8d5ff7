"""The thin HTTP layer: log-in and token renewal (`AuthSession`) and authenticated JSON calls
(`Api`). Decisions live in the pure modules; this one only performs requests and maps failures
onto `TransientError` (retry) or `ApiError` subclasses (do not)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import structlog

from .errors import (
    BAN_CODES,
    ApiError,
    AuthenticationError,
    Banned,
    TransientError,
    parse_banned_until,
)

log = structlog.get_logger("webinar_chat.client")

# Renew an access token this long before its `exp` (at most a tenth of its lifetime): a token
# that expires in flight costs a round trip (401, refresh, retry), and clocks may disagree by a
# second or two.
EXPIRY_MARGIN_S = 5.0


def decode_body(response: httpx.Response) -> Any:
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None


def error_of(response: httpx.Response) -> tuple[str, str]:
    """(code, message) of an error answer; proxies may answer with non-JSON bodies."""
    body = decode_body(response)
    if isinstance(body, Mapping):
        return str(body.get("code") or f"http_{response.status_code}"), str(
            body.get("error") or response.reason_phrase)
    return f"http_{response.status_code}", response.reason_phrase


@dataclass(frozen=True, slots=True)
class Tokens:
    access_token: str
    refresh_token: str | None = None
    expires_at: float | None = None  # wall-clock seconds (time.time()), if known
    lifetime: float | None = None  # seconds the token was issued for, if known

    def renew_due(self, now: float) -> bool:
        if self.expires_at is None:
            return False
        margin = min(EXPIRY_MARGIN_S, 0.1 * (self.lifetime or 0.0))
        return self.expires_at - margin <= now


TokenListener = Callable[[str], None]


class AuthSession:
    """Holds the tokens; renews the access token with the (rotating) refresh token, or by
    logging in again when the client was given credentials.

    Renewal is single-flight: a rotating refresh token must never be presented twice (the server
    would see re-use and revoke the whole session), so concurrent callers that saw the same stale
    token share one renewal.
    """

    def __init__(self, http: httpx.AsyncClient, *, email: str | None, password: str | None,
                 tokens: Tokens | None, timeout: float, clock: Callable[[], float] = time.time
                 ) -> None:
        self._http = http
        self._email = email
        self._password = password
        self._tokens = tokens
        self._timeout = timeout
        self._clock = clock
        self._lock = asyncio.Lock()
        self._listeners: list[TokenListener] = []
        self.user: dict[str, Any] | None = None
        self.renewals = 0

    @property
    def access_token(self) -> str:
        if self._tokens is None:
            raise AuthenticationError(401, "unauthorized", "not logged in")
        return self._tokens.access_token

    @property
    def logged_in(self) -> bool:
        return self._tokens is not None

    def on_token(self, listener: TokenListener) -> Callable[[], None]:
        """Call `listener(new_access_token)` after every renewal; returns an unsubscribe."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    async def login(self) -> None:
        if self._email is None or self._password is None:
            raise AuthenticationError(401, "unauthorized", "no credentials to log in with")
        body = await self._post("/api/auth/login", {"email": self._email,
                                                    "password": self._password})
        self._accept(body)

    async def token(self) -> str:
        """The access token, renewed first if it is about to expire by the local clock."""
        tokens = self._tokens
        if tokens is None:
            raise AuthenticationError(401, "unauthorized", "not logged in")
        if tokens.renew_due(self._clock()):
            if tokens.refresh_token is not None or self._email is not None:
                return await self.renew(tokens.access_token)
        return tokens.access_token

    async def renew(self, stale: str) -> str:
        """Replace the access token `stale` (refused by the server or expired). Returns the new
        one. Raises `AuthenticationError` when no renewal is possible, `TransientError` when the
        server could not be reached (retry later)."""
        async with self._lock:
            if self._tokens is not None and self._tokens.access_token != stale:
                return self._tokens.access_token  # someone else renewed it meanwhile
            refresh = self._tokens.refresh_token if self._tokens else None
            renewed = False
            if refresh is not None:
                try:
                    self._accept(await self._post("/api/auth/refresh",
                                                  {"refresh_token": refresh}))
                    renewed = True
                except AuthenticationError as exc:
                    if self._email is None:
                        raise
                    log.info("sdk_refresh_refused", code=exc.code)
            if not renewed:
                await self.login()
            self.renewals += 1
            token = self.access_token
        for listener in list(self._listeners):
            listener(token)
        return token

    async def logout(self) -> None:
        """Revoke the refresh token's family (best effort: errors are swallowed)."""
        tokens, self._tokens = self._tokens, None
        if tokens is None or tokens.refresh_token is None:
            return
        try:
            await self._post("/api/auth/logout", {"refresh_token": tokens.refresh_token})
        except (ApiError, TransientError) as exc:
            log.info("sdk_logout_failed", error=str(exc))

    def _accept(self, body: Mapping[str, Any]) -> None:
        access = body.get("access_token")
        if not isinstance(access, str):
            raise TransientError("auth answer without access_token")
        refresh = body.get("refresh_token")
        expires_in = body.get("expires_in")
        lifetime = float(expires_in) if isinstance(expires_in, int | float) else None
        self._tokens = Tokens(access, refresh if isinstance(refresh, str) else None,
                              None if lifetime is None else self._clock() + lifetime, lifetime)
        user = body.get("user")
        if isinstance(user, dict):
            self.user = user

    async def _post(self, path: str, payload: dict[str, Any]) -> Mapping[str, Any]:
        response = await self._request("POST", path, payload)
        body = decode_body(response)
        if response.status_code == 200 and isinstance(body, Mapping):
            return body
        code, message = error_of(response)
        if response.status_code >= 500 or response.status_code in (408, 429):
            raise TransientError(f"{path}: HTTP {response.status_code} {code}")
        raise AuthenticationError(response.status_code, code, message)

    async def _request(self, method: str, path: str, payload: dict[str, Any]) -> httpx.Response:
        try:
            async with asyncio.timeout(self._timeout):
                return await self._http.request(method, path, json=payload, timeout=self._timeout)
        except (httpx.TransportError, TimeoutError) as exc:
            raise TransientError(f"{path}: {type(exc).__name__}: {exc}") from exc


class Api:
    """Authenticated JSON calls. A 401 renews the token once and repeats the call."""

    def __init__(self, http: httpx.AsyncClient, auth: AuthSession, timeout: float) -> None:
        self.http = http
        self.auth = auth
        self.timeout = timeout

    async def get(self, path: str, params: Mapping[str, Any] | None = None, *,
                  time_limit: float | None = None) -> dict[str, Any]:
        return await self.request("GET", path, params=params, time_limit=time_limit)

    async def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                      json: Any = None, time_limit: float | None = None) -> dict[str, Any]:
        """One call → the JSON body of a 200. Raises `TransientError` (network, timeout, 5xx,
        429: retry later) or `ApiError` (other 4xx; `AuthenticationError` for a 401 that a token
        renewal did not cure)."""
        response = await self.respond(method, path, params=params, json=json,
                                      time_limit=time_limit)
        body = decode_body(response)
        if response.status_code == 200 and isinstance(body, dict):
            return body
        code, message = error_of(response)
        if response.status_code >= 500 or response.status_code in (408, 429):
            raise TransientError(f"{method} {path}: HTTP {response.status_code} {code}")
        if response.status_code == 401:
            raise AuthenticationError(401, code, message)
        if code in BAN_CODES:
            raise Banned(response.status_code, code, message, banned_until=parse_banned_until(
                body.get("banned_until") if isinstance(body, dict) else None))
        raise ApiError(response.status_code, code, message)

    async def respond(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                      json: Any = None, content: bytes | None = None,
                      headers: Mapping[str, str] | None = None,
                      time_limit: float | None = None) -> httpx.Response:
        """One authenticated call → its response, whatever its status, for callers that read
        more than the body (e.g. Retry-After). A 401 renews the token once and repeats the call.
        Raises `TransientError` (network, timeout) and whatever a renewal raises."""
        limit = time_limit if time_limit is not None else self.timeout
        for attempt in (1, 2):
            token = await self.auth.token()
            try:
                async with asyncio.timeout(limit):
                    response = await self.http.request(
                        method, path, params=params, json=json, content=content, timeout=limit,
                        headers={**(headers or {}), "Authorization": f"Bearer {token}"})
            except (httpx.TransportError, TimeoutError) as exc:
                raise TransientError(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
            if response.status_code == 401 and attempt == 1:
                await self.auth.renew(token)
                continue
            return response
        raise AssertionError("unreachable")
