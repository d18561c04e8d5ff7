"""Access tokens (short-lived HS256 JWTs) and opaque rotating refresh tokens."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import jwt

ALGORITHM = "HS256"


class TokenError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code  # "token_expired" | "invalid_token"


@dataclass(frozen=True, slots=True)
class AccessClaims:
    user_id: int
    expires_at: float
    # A token from the host platform (auth/external.py): the `kid` of the key that signed it
    # ("" for the shared secret). None: one of ours.
    key_id: str | None = None


# Verified access tokens remembered per process. A long-poll fallback re-presents the same token
# every few seconds per attendee; an HMAC check plus JSON decoding each time is a large share of
# such a request. Keyed by the whole token (signature included) and re-checked for expiry on
# every hit, so a hit is exactly as valid as a fresh verification.
VERIFIED_CACHE_SIZE = 20_000


class TokenService:
    def __init__(self, secret: str, access_ttl_s: int) -> None:
        self._secret = secret
        self.access_ttl_s = access_ttl_s
        self._verified: dict[str, AccessClaims] = {}
        # Tokens from the host platform (server/identities.py sets it): called for a token that
        # is not one of ours, synchronously; raises TokenError.
        self.external: Callable[[str], AccessClaims] | None = None

    def issue_access(self, user_id: int, *, ttl_s: float | None = None) -> tuple[str, int]:
        now = int(time.time())
        ttl = int(self.access_ttl_s if ttl_s is None else ttl_s)
        claims = {"sub": str(user_id), "iat": now, "exp": now + ttl, "typ": "access"}
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM), ttl

    def cached(self, token: str) -> AccessClaims | None:
        """The claims of a token verified before and not expired since, else None: then call
        `verify_access`, which also says why a token is refused. (The long-poll fast path answers
        only requests whose token is already known good.)"""
        claims = self._verified.get(token)
        if claims is not None and claims.expires_at > time.time():
            return claims
        return None

    def verify_access(self, token: str) -> AccessClaims:
        cached = self._verified.get(token)
        if cached is not None:
            if cached.expires_at > time.time():
                return cached
            del self._verified[token]
        try:
            claims = self._decode(token)
        except TokenError as exc:
            if self.external is None or exc.code == "token_expired":
                raise  # expired: the signature was ours
            claims = self.external(token)
        self.remember(token, claims)
        return claims

    def verify_own(self, token: str) -> AccessClaims:
        """`verify_access` for our own tokens only (none from the host platform)."""
        cached = self.cached(token)
        if cached is not None and cached.key_id is None:
            return cached
        claims = self._decode(token)
        self.remember(token, claims)
        return claims

    def remember(self, token: str, claims: AccessClaims) -> None:
        """Keep a verified token's claims (also for tokens verified elsewhere: the host
        platform's, server/identities.py)."""
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.clear()  # crude but bounded; refills with the active tokens at once
        self._verified[token] = claims

    def forget(self, drop: Callable[[AccessClaims], bool]) -> None:
        """Drop the remembered tokens whose claims `drop` says (a key the issuer withdrew)."""
        for token in [t for t, claims in self._verified.items() if drop(claims)]:
            del self._verified[token]

    def _decode(self, token: str) -> AccessClaims:
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                leeway=0,
                options={"require": ["exp", "sub"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenError("token_expired", "Access token expired") from exc
        except jwt.PyJWTError as exc:
            raise TokenError("invalid_token", "Invalid access token") from exc
        if claims.get("typ") != "access" or not str(claims["sub"]).isdigit():
            raise TokenError("invalid_token", "Invalid access token")
        return AccessClaims(int(claims["sub"]), float(claims["exp"]))


def new_refresh_token() -> tuple[str, str]:
    """(token for the client, sha256 hex kept in the database)."""
    token = secrets.token_urlsafe(32)
    return token, hash_refresh_token(token)


def hash_refresh_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
