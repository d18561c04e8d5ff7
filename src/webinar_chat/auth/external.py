"""Tokens from the host platform: verification of JWTs that someone else signed (docs/external-auth.md).

Two kinds of keys, each with its own algorithms:
- a shared secret (`EXTERNAL_JWT_SECRET`) for HS256/HS384/HS512: what Supabase Auth signed with;
- a JSON Web Key Set (`EXTERNAL_JWT_JWKS_URL` or `EXTERNAL_JWT_JWKS_FILE`) for RS*/PS*/ES*/EdDSA,
  each key chosen by the token's `kid`. The set is read at start, again every
  `EXTERNAL_JWT_JWKS_REFRESH_S`, and when a token names a `kid` the set does not have (the
  issuer rotated its keys) — at most once per `EXTERNAL_JWT_JWKS_MIN_REFETCH_S` for that reason,
  so that tokens with made-up kids cannot make us hammer the issuer.

A token's algorithm must be one of the configured ones *and* fit the key that verifies it: an
HS256 token is only ever checked against the secret, an RS256 one only against an RSA key of the
set (no HS/RS confusion: a public key is never used as an HMAC secret), `alg: none` never.

What is synchronous here (`ExternalVerifier.verify`) uses keys already in memory, so that the
synchronous verification call sites (server/http_api.py `_user_id`, the realtime session) can
run it; fetching is the async `JwksRefresher`'s, with httpx, never on a request's critical path
except the one awaited refetch for an unknown `kid`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import jwt
import structlog

from .tokens import TokenError

if TYPE_CHECKING:
    from ..settings import Settings

log = structlog.get_logger(__name__)

HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
KEY_TYPES = {"RS256": "RSA", "RS384": "RSA", "RS512": "RSA", "PS256": "RSA", "PS384": "RSA",
             "PS512": "RSA", "ES256": "EC", "ES384": "EC", "ES512": "EC", "EdDSA": "OKP"}
JWKS_FETCH_TIMEOUT_S = 5.0
MAX_JWKS_BYTES = 1 << 20


class UnknownKey(TokenError):
    """The token names a `kid` that the key set does not have (yet): refetch, then retry."""

    def __init__(self, key_id: str | None) -> None:
        super().__init__("invalid_token", "Invalid access token: unknown signing key")
        self.key_id = key_id


def invalid(reason: str) -> TokenError:
    return TokenError("invalid_token", f"Invalid access token: {reason}")


def _split(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


@dataclass(frozen=True)
class ExternalConfig:
    secret: str = ""
    jwks_url: str = ""
    jwks_file: str = ""
    issuer: str = ""
    audience: tuple[str, ...] = ()
    algorithms: tuple[str, ...] = ()
    leeway_s: float = 0.0
    subject_claim: str = "sub"
    name_claims: tuple[str, ...] = ("name",)
    email_claim: str = "email"
    role_claim: str = ""
    webinars_claim: str = ""
    refresh_s: float = 300.0
    min_refetch_s: float = 10.0

    @property
    def uses_jwks(self) -> bool:
        return bool(self.jwks_url or self.jwks_file)

    @classmethod
    def from_settings(cls, settings: Settings) -> ExternalConfig | None:
        """None when external tokens are off (no secret, no JWKS); ValueError for a
        configuration that cannot work, so that `serve` fails at start."""
        s = settings
        if not (s.external_jwt_secret or s.external_jwt_jwks_url or s.external_jwt_jwks_file):
            return None
        if s.external_jwt_jwks_url and s.external_jwt_jwks_file:
            raise ValueError("set EXTERNAL_JWT_JWKS_URL or EXTERNAL_JWT_JWKS_FILE, not both")
        if s.external_jwt_jwks_url and not s.external_jwt_jwks_url.startswith(("https://",
                                                                               "http://")):
            raise ValueError("EXTERNAL_JWT_JWKS_URL must be an http(s) URL")
        uses_jwks = bool(s.external_jwt_jwks_url or s.external_jwt_jwks_file)
        algorithms = _split(s.external_jwt_algorithms)
        if not algorithms:
            algorithms = (("HS256",) if s.external_jwt_secret else ()) + (
                ("RS256", "ES256") if uses_jwks else ())
        for alg in algorithms:
            if alg in HMAC_ALGORITHMS:
                if not s.external_jwt_secret:
                    raise ValueError(f"EXTERNAL_JWT_ALGORITHMS: {alg} needs EXTERNAL_JWT_SECRET")
            elif alg in KEY_TYPES:
                if not uses_jwks:
                    raise ValueError(f"EXTERNAL_JWT_ALGORITHMS: {alg} needs a JWKS "
                                     "(EXTERNAL_JWT_JWKS_URL or EXTERNAL_JWT_JWKS_FILE)")
            else:
                raise ValueError(f"EXTERNAL_JWT_ALGORITHMS: {alg!r} is not supported")
        if s.external_jwt_secret and len(s.external_jwt_secret.encode()) < 32:
            # RFC 7518 §3.2: an HS256 key of at least 256 bits (PyJWT warns below that).
            raise ValueError("EXTERNAL_JWT_SECRET is too short (at least 32 bytes)")
        if not s.external_jwt_subject_claim.strip():
            raise ValueError("EXTERNAL_JWT_SUBJECT_CLAIM must not be empty")
        return cls(
            secret=s.external_jwt_secret, jwks_url=s.external_jwt_jwks_url,
            jwks_file=s.external_jwt_jwks_file, issuer=s.external_jwt_issuer.strip(),
            audience=_split(s.external_jwt_audience), algorithms=algorithms,
            leeway_s=max(0.0, s.external_jwt_leeway_s),
            subject_claim=s.external_jwt_subject_claim.strip(),
            name_claims=_split(s.external_jwt_name_claim),
            email_claim=s.external_jwt_email_claim.strip(),
            role_claim=s.external_jwt_role_claim.strip(),
            webinars_claim=s.external_jwt_webinars_claim.strip(),
            refresh_s=max(1.0, s.external_jwt_jwks_refresh_s),
            min_refetch_s=max(0.0, s.external_jwt_jwks_min_refetch_s))


@dataclass(frozen=True)
class VerifiedToken:
    """A token whose signature and registered claims (exp, iss, aud) checked out."""

    payload: dict[str, Any]
    key_id: str | None


def parse_jwks(document: Any) -> dict[str, jwt.PyJWK]:
    """The usable public keys of a JWKS document by `kid` (a key without one: under ""). Keys
    that are symmetric (`oct`), private-only, for encryption, or that PyJWT cannot load are left
    out; a document without a `keys` list raises ValueError."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("a JWKS document is an object with a 'keys' list")
    keys: dict[str, jwt.PyJWK] = {}
    for data in document["keys"]:
        if not isinstance(data, dict) or data.get("kty") not in ("RSA", "EC", "OKP"):
            continue
        if data.get("use") not in (None, "sig") or "d" in data:
            continue  # for encryption, or a private key published by mistake
        try:
            key = jwt.PyJWK(data)
        except (jwt.PyJWTError, ValueError, TypeError, KeyError):
            continue
        keys[str(data.get("kid") or "")] = key
    return keys


class ExternalVerifier:
    """Synchronous verification against the secret and the key set held in memory."""

    def __init__(self, config: ExternalConfig) -> None:
        self.config = config
        self.keys: dict[str, jwt.PyJWK] = {}
        self.keys_loaded = False  # a key set was read at least once

    def set_keys(self, keys: dict[str, jwt.PyJWK]) -> set[str]:
        """Replace the key set; the kids that were removed."""
        removed = set(self.keys) - set(keys)
        self.keys = keys
        self.keys_loaded = True
        return removed

    def verify(self, token: str) -> VerifiedToken:
        config = self.config
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise invalid("malformed") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in config.algorithms:
            raise invalid("algorithm not allowed")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise invalid("malformed kid")
        key: Any
        if alg in HMAC_ALGORITHMS:
            key = config.secret
        else:
            key = self._key(kid, alg).key
        try:
            payload = jwt.decode(
                token, key, algorithms=[alg],
                audience=list(config.audience) or None, issuer=config.issuer or None,
                leeway=config.leeway_s,
                options={"require": ["exp"], "verify_aud": bool(config.audience)})
        except jwt.ExpiredSignatureError as exc:
            raise TokenError("token_expired", "Access token expired") from exc
        except jwt.InvalidSignatureError:
            raise invalid("wrong signature") from None
        except jwt.InvalidIssuerError:
            raise invalid("wrong issuer") from None
        except jwt.InvalidAudienceError:
            raise invalid("wrong audience") from None
        except (jwt.PyJWTError, ValueError, TypeError):
            raise invalid("refused") from None
        return VerifiedToken(payload, kid)

    def _key(self, kid: str | None, alg: str) -> jwt.PyJWK:
        kty = KEY_TYPES[alg]
        if kid is None:
            # Without a kid, only a set with exactly one key of the right type can say which.
            fitting = [k for k in self.keys.values() if _fits(k, kty, alg)]
            if len(fitting) != 1:
                raise UnknownKey(None) if not fitting else invalid("token has no kid")
            return fitting[0]
        key = self.keys.get(kid)
        if key is None:
            raise UnknownKey(kid)
        if not _fits(key, kty, alg):
            raise invalid("algorithm does not fit the key")
        return key

    def unknown_key(self, token: str) -> str | None:
        """The kid of a token signed with a key we do not have (None: we have it, or the token
        says nothing usable): the refresher fetches the set again for it."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return None
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in KEY_TYPES or alg not in self.config.algorithms:
            return None
        if isinstance(kid, str):
            return kid if kid not in self.keys else None
        return "" if not self.keys else None


def _fits(key: jwt.PyJWK, kty: str, alg: str) -> bool:
    declared = key._jwk_data.get("alg")
    return key.key_type == kty and (declared is None or declared == alg)


class JwksRefresher:
    """Keeps `verifier.keys` current: the file or URL read at `start`, every `refresh_s` after,
    and again (awaited by the caller) for a token with an unknown kid, at most once per
    `min_refetch_s` for that reason. Concurrent refetches share one read. A failed read keeps
    the keys we have (logged; the next period tries again)."""

    def __init__(self, verifier: ExternalVerifier, *,
                 on_keys_removed: Callable[[set[str]], None] | None = None,
                 on_error: Callable[[str, BaseException], None] | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.verifier = verifier
        self.config = verifier.config
        self.on_keys_removed = on_keys_removed
        self.on_error = on_error
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._inflight: asyncio.Task[bool] | None = None
        self._last_refetch = -float("inf")  # monotonic time of the last unknown-kid read
        self.fetches = 0  # reads of the source (a metrics and test seam)

    async def start(self) -> None:
        """Read the set once (a file that cannot be read: raises, the server does not start; a
        URL that does not answer: logged, tried again in the background) and start the timer."""
        if not self.config.uses_jwks:
            return
        if self.config.jwks_file:
            self._install(await asyncio.to_thread(self._read_file))
        else:
            self._client = httpx.AsyncClient(timeout=JWKS_FETCH_TIMEOUT_S,
                                             transport=self._transport,
                                             follow_redirects=False)
            await self._load()
        self._loop_task = asyncio.get_running_loop().create_task(self._periodic())

    async def close(self) -> None:
        for task in (self._loop_task, self._inflight):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._client is not None:
            await self._client.aclose()

    async def refetch_for(self, kid: str) -> bool:
        """A token names `kid`, which we do not have: read the set again, unless that was done
        for an unknown kid less than `min_refetch_s` ago. True when the set was read (or a read
        in flight finished)."""
        if not self.config.uses_jwks:
            return False
        if self._inflight is None or self._inflight.done():
            now = time.monotonic()
            if now - self._last_refetch < self.config.min_refetch_s:
                return False
            self._last_refetch = now
            self._inflight = asyncio.get_running_loop().create_task(self._load())
        return await asyncio.shield(self._inflight)

    async def _periodic(self) -> None:
        while True:
            await asyncio.sleep(self.config.refresh_s)
            await self._load()

    async def _load(self) -> bool:
        try:
            if self.config.jwks_file:
                keys = await asyncio.to_thread(self._read_file)
            else:
                keys = await self._fetch()
        except Exception as exc:
            log.warning("external_jwks_read_failed", source=self._source(), error=str(exc)[:300])
            if self.on_error is not None:
                self.on_error("external_jwks", exc)
            return False
        self._install(keys)
        return True

    def _install(self, keys: dict[str, jwt.PyJWK]) -> None:
        before = set(self.verifier.keys)
        removed = self.verifier.set_keys(keys)
        if set(keys) != before:
            log.info("external_jwks_loaded", source=self._source(), kids=sorted(keys)[:50],
                     removed=sorted(removed)[:50] or None)
        if removed and self.on_keys_removed is not None:
            self.on_keys_removed(removed)

    def _source(self) -> str:
        return self.config.jwks_file or self.config.jwks_url

    def _read_file(self) -> dict[str, jwt.PyJWK]:
        self.fetches += 1
        raw = Path(self.config.jwks_file).read_bytes()
        if len(raw) > MAX_JWKS_BYTES:
            raise ValueError("the JWKS file is too large")
        return parse_jwks(json.loads(raw))

    async def _fetch(self) -> dict[str, jwt.PyJWK]:
        assert self._client is not None
        self.fetches += 1
        response = await self._client.get(self.config.jwks_url,
                                          headers={"Accept": "application/json"})
        response.raise_for_status()
        if len(response.content) > MAX_JWKS_BYTES:
            raise ValueError("the JWKS document is too large")
        return parse_jwks(response.json())
