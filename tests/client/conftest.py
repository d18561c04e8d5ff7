"""Fixtures for the SDK tests: SQLite only (the SDK does not care which database the server
runs on), a server with fast heartbeats, and SDK clients with test-sized timings."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from webinar_chat.client import ChatClient, ClientConfig

from ..helpers import PASSWORD, Person, RunningServer

# Test-sized timings: every threshold ~10× below the default so a socket-loss test takes about a
# second. Server heartbeats every 0.25 s (server_overrides) keep a healthy socket well inside the
# 1 s silence threshold.
FAST = ClientConfig(
    send_timeout=2.0, send_retry_base=0.05, send_retry_cap=0.5,
    reconnect_base=0.05, reconnect_cap=0.5, connect_timeout=2.0,
    silence_timeout=1.0, heartbeat_interval=0.5,
    poll_wait=1.0, poll_retry=0.1, poll_retry_jitter=0.02, http_timeout=5.0,
)


@pytest.fixture
def backend() -> str:
    """The SDK talks HTTP/WebSocket; the store backends are covered by tests/store."""
    return "sqlite"


@pytest.fixture
def server_overrides() -> dict[str, Any]:
    return {"heartbeat_interval_s": 0.25}


ClientFactory = Callable[..., Any]


@pytest.fixture
async def make_client(server: RunningServer) -> AsyncIterator[ClientFactory]:
    """`await make_client(person, **ChatClient kwargs)` → an entered ChatClient, closed at the
    end of the test."""
    async with contextlib.AsyncExitStack() as stack:

        async def factory(person: Person, **kwargs: Any) -> ChatClient:
            kwargs.setdefault("config", FAST)
            if "access_token" not in kwargs:
                kwargs.setdefault("email", person.email)
                kwargs.setdefault("password", PASSWORD)
            client = ChatClient(server.base_url, **kwargs)
            return await stack.enter_async_context(client)

        yield factory
