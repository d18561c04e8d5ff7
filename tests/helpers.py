"""Test helpers: a real server on a free port, fresh databases, a small world of tenants/users."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from webinar_chat.auth.passwords import hash_password
from webinar_chat.auth.tokens import TokenService
from webinar_chat.server.runner import ChatServer
from webinar_chat.settings import Settings
from webinar_chat.store import Store
from webinar_chat.store.migrate import migrate
from webinar_chat.store.store import Webinar

PG_ADMIN_URL = os.environ.get("DATABASE_TEST_URL", "postgresql://postgres@127.0.0.1:5432/test")
JWT_SECRET = "test-secret-" + "x" * 40
PASSWORD = "correct horse battery"
_PASSWORD_HASH: list[str] = []


def password_hash() -> str:
    # argon2 is slow by design: hash the shared test password once per session.
    if not _PASSWORD_HASH:
        _PASSWORD_HASH.append(hash_password(PASSWORD))
    return _PASSWORD_HASH[0]


async def wait_for_port(port: int, process: Any, what: str, timeout: float = 10.0) -> None:
    """Until 127.0.0.1:`port` accepts a connection; raises if `process` (a Popen) exits first
    or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            await writer.wait_closed()
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start") from None
            await asyncio.sleep(0.05)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_port_range(count: int) -> int:
    """The first of `count` consecutive free ports (METRICS_PORT + i for worker i): a free port
    whose neighbour another process holds would fail the second worker's start-up."""
    for _ in range(100):
        base = free_port()
        sockets = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
        return base
    raise RuntimeError(f"no {count} consecutive free ports")


@contextlib.asynccontextmanager
async def fresh_database(backend: str, tmp_path: Any) -> AsyncIterator[str]:
    """A new, migrated database: a file for SQLite, a new database for PostgreSQL."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path}/chat-{uuid.uuid4().hex[:8]}.db"
        await asyncio.to_thread(migrate, url)
        yield url
        return
    name = f"wc_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    url = f"{base}/{name}"
    try:
        await asyncio.to_thread(migrate, url)
        yield url
    finally:
        admin = await asyncpg.connect(PG_ADMIN_URL)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


# The delivery, fan-out, soak and cluster tests send and connect in bulk, as a few users from
# 127.0.0.1: their servers get message and connect buckets that no test empties (the limiter
# still runs on every create and handshake). Tests of the limits set their own
# (tests/api/test_rate_limits.py); the log-in and sign-up limits keep their production defaults.
UNLIMITED = "1000000/1"
BULK_LIMITS = {"rate_messages": UNLIMITED, "rate_messages_staff": UNLIMITED,
               "rate_ws_connect_ip": UNLIMITED, "rate_ws_connect_user": UNLIMITED}
BULK_LIMITS_ENV = {"RATE_LIMIT_MESSAGES": UNLIMITED, "RATE_LIMIT_MESSAGES_STAFF": UNLIMITED,
                   "RATE_LIMIT_WS_CONNECT_IP": UNLIMITED, "RATE_LIMIT_WS_CONNECT_USER": UNLIMITED}


def test_settings(database_url: str, **overrides: Any) -> Settings:
    """The settings `webinar-chat serve` would read from this environment (LOG_FORMAT, LOG_LEVEL
    included), on `database_url`, with the test secret, BULK_LIMITS and `overrides`."""
    return Settings.from_env(database_url=database_url, jwt_secret=JWT_SECRET,
                             **{**BULK_LIMITS, **overrides})


@dataclass
class Person:
    user_id: int
    email: str
    display_name: str
    token: str = ""


@dataclass
class World:
    """One agency/client/webinar with a host, a moderator and two attendees, plus an outsider
    registered only for another agency's webinar."""

    webinar: Webinar
    other_webinar: Webinar
    host: Person
    moderator: Person
    alice: Person
    bob: Person
    outsider: Person
    admin: Person
    people: dict[str, Person] = field(default_factory=dict)


async def make_world(store: Store, tokens: TokenService, **webinar_kwargs: Any) -> World:
    agency = await store.create_agency("Acme Events")
    client = await store.create_client(agency, "Acme Corp")
    webinar = await store.create_webinar(client, "Quarterly update", **webinar_kwargs)
    other_agency = await store.create_agency("Other Agency")
    other_client = await store.create_client(other_agency, "Other Corp")
    other = await store.create_webinar(other_client, "Someone else's webinar")
    people: dict[str, Person] = {}
    for key, role, target in (("host", "host", webinar), ("moderator", "moderator", webinar),
                              ("alice", "attendee", webinar), ("bob", "attendee", webinar),
                              ("outsider", "attendee", other), ("admin", None, None)):
        user = await store.create_user(f"{key}-{uuid.uuid4().hex[:6]}@example.test",
                                       password_hash(), key.capitalize(), is_admin=key == "admin")
        if role is not None and target is not None:
            await store.register(target.id, user.id, role)
        token, _ = tokens.issue_access(user.id)
        people[key] = Person(user.id, user.email, user.display_name, token)
    return World(webinar, other, people["host"], people["moderator"], people["alice"],
                 people["bob"], people["outsider"], people["admin"], people)


class LocalServer:
    """A server of ours listening on 127.0.0.1:`port`."""

    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/realtime"


class RunningServer(LocalServer):
    """The production server (`runner.build_server`, as `webinar-chat serve` builds it: logging,
    protocols, app) in this event loop, on a free port. For the CLI process itself — signals,
    kill -9, a server that shares nothing with the test process — see `tests/serve.py`."""

    def __init__(self, settings: Settings, port: int | None = None) -> None:
        self.settings = settings
        self.port = port or free_port()
        self._server: ChatServer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def app_state(self) -> Any:
        assert self._server is not None
        return self._server.chat_app.state.chat

    async def start(self) -> None:
        from webinar_chat.server.runner import build_server

        self._server = build_server(self.settings.with_(host="127.0.0.1", port=self.port))
        self._server.config.timeout_graceful_shutdown = 1
        self._task = asyncio.create_task(self._server.serve())
        ready = asyncio.create_task(self._server.ready.wait())
        await asyncio.wait({ready, self._task}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            ready.cancel()
            if self._task.done():
                self._task.result()  # raises what stopped the start-up
            raise TimeoutError("server did not start")

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
            self._server = None

    async def restart(self) -> None:
        await self.stop()
        await self.start()


async def eventually(predicate: Callable[[], Awaitable[bool] | bool], timeout: float = 5.0,
                     interval: float = 0.02, message: str = "condition not met") -> None:
    """Poll until `predicate()` is true (no fixed sleeps in tests)."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result) or isinstance(result, Awaitable):
            result = await result  # type: ignore[misc]
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(message)
        await asyncio.sleep(interval)


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def new_id() -> str:
    return str(uuid.uuid4())


async def send(http: httpx.AsyncClient, person: Person, webinar_id: int, content: str,
               client_msg_id: str | None = None) -> httpx.Response:
    body: dict[str, Any] = {"webinarId": webinar_id, "content": content}
    if client_msg_id is not None:
        body["clientMsgId"] = client_msg_id
    return await http.post("/api/messages/create", json=body, headers=auth(person.token))


def metric_value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called `name` whose labels include `labels`, in a /metrics text
    (parsed by prometheus-client's own parser: the exposition format is checked on the way)."""
    from prometheus_client.parser import text_string_to_metric_families

    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples
               if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()))


async def scrape(server: LocalServer, port: int | None = None) -> str:
    url = f"http://127.0.0.1:{port or server.port}/metrics"
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(url)
    assert response.status_code == 200, response.text
    return response.text


SOMAXCONN = int(Path("/proc/sys/net/core/somaxconn").read_text())


def listen_queue_size(port: int) -> int:
    """The accept queue's size of the socket listening on `port`: `ss`'s Send-Q for a listening
    socket (the kernel caps what listen() asked for at net.core.somaxconn)."""
    out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out and out[0] == "LISTEN", out
    return int(out[2])
