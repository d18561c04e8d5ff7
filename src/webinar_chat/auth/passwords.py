"""Password hashing with argon2id (argon2-cffi's defaults follow RFC 9106's recommendations).

Hashing deliberately costs tens of milliseconds of CPU: call these through `asyncio.to_thread` so
the event loop (and every socket on it) keeps running during a log-in."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()

# Verified against when the e-mail is unknown, so that a log-in for a missing account costs the same
# time as a wrong password (no account enumeration by timing).
_DUMMY_HASH = _hasher.hash("not-a-real-password")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False
