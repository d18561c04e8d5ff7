"""Request ids: taken from a sane incoming `X-Request-ID`, else generated. Used by the ASGI
middleware (middleware.py) and by the long-poll fast path, which answers without ASGI
(http_protocol.py), so that every HTTP answer carries one."""

from __future__ import annotations

import itertools
import re
import secrets

REQUEST_ID_HEADER = b"x-request-id"
# On every answer, before the request id (the middleware and the long-poll fast path both write
# them, in this order): no browser guesses a JSON body into something it would run.
NOSNIFF = (b"x-content-type-options", b"nosniff")
# What we accept from outside: short, and nothing that could forge a log line or a header.
_SANE = re.compile(rb"[A-Za-z0-9._:-]{1,128}")


def sane_request_id(value: bytes) -> bytes | None:
    return value if _SANE.fullmatch(value) else None


class RequestIds:
    """Unique ids without a system call each: a random per-instance prefix and a counter (the
    fast path may answer tens of thousands of polls per second; uuid4 reads the OS's random
    source every time)."""

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(6)
        self._counter = itertools.count(1)

    def new(self) -> str:
        return f"{self._prefix}{next(self._counter):010x}"
