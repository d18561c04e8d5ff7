"""Schemathesis hooks for scripts/api-contract (loaded through SCHEMATHESIS_HOOKS).

One rule of the API cannot be written in JSON Schema: a new password is also refused when it has
fewer than four different characters, is one of the 30,000 most common leaked passwords, or is
the account's own e-mail or name (auth/passwords.py; the document says so in the field's
description). Schemathesis' positive cases — the ones `positive_data_acceptance` expects to be
accepted — would otherwise send `"0000000000"` and count the 400 as a server bug. For those cases
only, a password the rule refuses is replaced by one it accepts, of the same length, so the case
still tests what it was generated to test. Negative cases are left alone (they must be refused
anyway), and every other field keeps its generated value.
"""

from __future__ import annotations

import hashlib
from typing import Any

import schemathesis
from schemathesis import GenerationMode

from webinar_chat.auth.passwords import MIN_PASSWORD_LENGTH, password_problem

_MAX_PASSWORD = 256


def _accepted_password(password: str, email: str, display_name: str) -> str:
    """A password of the same length that the rule accepts (deterministic, for replays)."""
    seed = hashlib.sha256(password.encode("utf-8", "surrogatepass")).hexdigest()
    candidate = ("Zq" + seed) * (len(password) // 66 + 1)
    candidate = candidate[:len(password)]
    assert password_problem(candidate, email=email, display_name=display_name) is None
    return candidate


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    meta = case.meta
    body = case.body
    if meta is None or meta.generation.mode is not GenerationMode.POSITIVE:
        return case
    if not isinstance(body, dict) or not isinstance(body.get("password"), str):
        return case
    if case.operation.path not in ("/api/auth/signup", "/api/admin/users"):
        return case
    password = body["password"]
    email = body.get("email") if isinstance(body.get("email"), str) else ""
    name = body.get("display_name") if isinstance(body.get("display_name"), str) else ""
    if not MIN_PASSWORD_LENGTH <= len(password) <= _MAX_PASSWORD:
        return case
    if password_problem(password, email=email, display_name=name) is not None:
        case.body = {**body, "password": _accepted_password(password, email, name)}
    return case
