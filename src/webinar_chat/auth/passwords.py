"""Password hashing with argon2id (argon2-cffi's defaults follow RFC 9106's recommendations), and
the rules a new password must meet (`password_problem`).

Hashing deliberately costs tens of milliseconds of CPU: call these through `asyncio.to_thread` so
the event loop (and every socket on it) keeps running during a log-in."""

from __future__ import annotations

import functools

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


# --- what a new password must be ------------------------------------------------------------------

MIN_PASSWORD_LENGTH = 10


@functools.cache
def _common_passwords() -> frozenset[str]:
    """The 30,000 most common passwords of leaked-password lists, as zxcvbn ships them (loaded
    on the first sign-up: a few MB the server needs only then)."""
    from zxcvbn.frequency_lists import FREQUENCY_LISTS

    return frozenset(FREQUENCY_LISTS["passwords"])


def password_problem(password: str, *, email: str = "", display_name: str = "") -> str | None:
    """Why `password` may not be set for a new account, or None. Log-ins never check this (an
    account made under older rules keeps working)."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"at least {MIN_PASSWORD_LENGTH} characters"
    folded = password.strip().casefold()
    if len(set(folded)) < 4:
        return "too simple (use more different characters)"
    if folded in _common_passwords() or folded.replace(" ", "") in _common_passwords():
        return "too common: it appears in lists of leaked passwords"
    personal = {email.casefold(), email.split("@")[0].casefold(), display_name.strip().casefold()}
    if folded in personal - {""}:
        return "must not be your e-mail address or name"
    return None
