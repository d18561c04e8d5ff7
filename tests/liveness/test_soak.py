"""The bounded soak test: many viewers and senders on one webinar of the real `webinar-chat serve`
process while it is killed, restarted and frozen, with moderation in between — then the guarantees
of docs/delivery.md are checked on what everybody ended up with.

Scenario (~40 s). The server runs with HEARTBEAT_INTERVAL=0.5, CLIENT_IDLE_TIMEOUT=4 and
LONG_POLL_MAX_WAIT=5 (tests/serve.py; the test's fresh SQLite database).
- Viewers, attendees and staff mixed:
  - 10 SDK clients on the WebSocket (silence threshold 2 s = 4 server heartbeats, fast backoff);
  - 4 long-pollers: 2 SDK clients whose socket is refused (a closed port: they fall back for good)
    and 2 plain `GET /changes?after_seq=N&wait=S` loops that go on from each answer's `last_seq`;
  - 3 raw WebSocket clients that rejoin with their `last_seq` after every disconnect, keeping
    every event unfiltered; one of them never sends heartbeats, so the server also drops it every
    CLIENT_IDLE_TIMEOUT (close 4000) and it rejoins again and again.
- 4 senders (alice, bob, the moderator, the host) POST a message every 0.4 s with their own retry
  loop: the same clientMsgId after a timeout, a connection error or a 5xx, until 200 or 409.
- The moderator hides and unhides recent messages every 0.6 s and deletes one.
- Faults, with calm stretches around them: kill -9 + restart (same port, same database), SIGSTOP
  for 2.5 s + SIGCONT, then both again. Each fault's window is recorded (monotonic start/end).

Asserted once the senders finished and every viewer caught up with the feed:
1. every acknowledged message is stored exactly once (the deleted one: not at all), with the id and
   content its acknowledgement carried, and nothing else is stored; the feed is dense (seq 1…last)
   with one INSERT per acknowledged message; the hidden flags are what the moderator last set;
2. every viewer was handed seq 1…last, each once, in order (SDK: what its room's iterator yielded;
   raw and long-poll viewers: what the server sent them);
3. every viewer's conversation equals the list API read with that viewer's own token;
4. no SDK socket viewer fell back to long-polling or lost its socket outside a fault window
   (+ RECOVERY_MARGIN_S);
and, when the server stops, its log has no traceback and no error record (the `cli_server` fixture).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from webinar_chat.client import ChatClient, ClientConfig, ConnectionStatus, Room

from ..client.faults import SocketGate
from ..helpers import PASSWORD, Person, World, auth, eventually, new_id
from ..serve import ServeProcess
from .conftest import CliServerFactory

pytestmark = pytest.mark.soak

# --- timings -------------------------------------------------------------------------------------

HEARTBEAT_S = 0.5
IDLE_TIMEOUT_S = 4.0  # above PAUSE_S + HEARTBEAT_S: a freeze alone must not idle-close clients
SERVER_ENV = {"HEARTBEAT_INTERVAL": str(HEARTBEAT_S), "CLIENT_IDLE_TIMEOUT": str(IDLE_TIMEOUT_S),
              "LONG_POLL_MAX_WAIT": "5"}
POLL_WAIT_S = 2.0  # long-poll `wait` of every poller (≤ LONG_POLL_MAX_WAIT)

# SDK viewers scaled to the server's heartbeat: 2 s of silence (4 missed heartbeats; the SDK never
# goes below 2 × the announced interval) marks a socket dead, reconnects back off 50 ms … 0.5 s.
SOCKET_VIEWER = ClientConfig(
    send_timeout=1.5, send_retry_base=0.05, send_retry_cap=0.5,
    reconnect_base=0.05, reconnect_cap=0.5, connect_timeout=1.5,
    silence_timeout=2.0, heartbeat_interval=HEARTBEAT_S,
    poll_wait=POLL_WAIT_S, poll_retry=0.2, poll_retry_jitter=0.05,
    http_timeout=5.0,  # a log-in waits for argon2 behind the other viewers' log-ins
)
# Their socket is always refused: no need to knock every 0.5 s.
FORCED_POLLER = SOCKET_VIEWER.with_(reconnect_cap=2.0)

SEND_EVERY_S = 0.4
SEND_ATTEMPT_TIMEOUT_S = 1.5  # < PAUSE_S: a freeze makes sends time out and retry
MAX_MESSAGES_PER_SENDER = 100  # 4 × 100 stays below the list API's limit of 500
MODERATE_EVERY_S = 0.6
MODERATIONS_BEFORE_THE_DELETE = 6

CALM_S = 5.0  # healthy stretch before, between and after the faults: any fallback there is a bug
PAUSE_S = 2.5  # > the 2 s silence threshold: the SDK sockets must notice the freeze
# After a fault ends (the restarted server is ready / SIGCONT sent), clients need a reconnect
# backoff (≤ 0.5 s) plus a handshake and the replay: a fallback or socket loss up to this long
# after the end still belongs to the fault.
RECOVERY_MARGIN_S = 2.0
SETTLE_TIMEOUT_S = 20.0
WATCH_EVERY_S = 0.05


# --- fault windows -------------------------------------------------------------------------------

@dataclass
class FaultWindow:
    name: str
    start: float
    end: float = math.inf


class FaultLog:
    """When each fault was on (monotonic), to tell a fallback the fault caused from one that a
    healthy server caused."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.windows: list[FaultWindow] = []

    @contextlib.contextmanager
    def window(self, name: str) -> Iterator[None]:
        fault = FaultWindow(name, time.monotonic())
        self.windows.append(fault)
        try:
            yield
        finally:
            fault.end = time.monotonic()

    def explains(self, moment: float) -> bool:
        return any(w.start <= moment <= w.end + RECOVERY_MARGIN_S for w in self.windows)

    def lateness(self, moment: float) -> float:
        """How long after the end of the last fault that began before `moment` (for the report)."""
        ends = [w.end for w in self.windows if w.start <= moment]
        return moment - ends[-1] if ends else math.inf

    def at(self, moment: float) -> str:
        return f"{moment - self.t0:.2f} s"

    def describe(self) -> str:
        return ", ".join(f"{w.name} {self.at(w.start)}–{self.at(w.end)}" for w in self.windows)


async def kill_and_restart(server: ServeProcess) -> None:
    await server.kill()  # no drain, no close frames: clients see resets
    await server.start()  # same port, same database; returns once /readyz answers


async def freeze(server: ServeProcess) -> None:
    server.pause()  # sockets stay open and silent: a hung server
    try:
        await asyncio.sleep(PAUSE_S)  # the fault's length, not a synchronisation
    finally:
        server.resume()


FAULTS: dict[str, Callable[[ServeProcess], Awaitable[None]]] = {
    "kill -9 + restart": kill_and_restart, "SIGSTOP + SIGCONT": freeze}
FAULT_PLAN = ("kill -9 + restart", "SIGSTOP + SIGCONT", "kill -9 + restart", "SIGSTOP + SIGCONT")


# --- background tasks ----------------------------------------------------------------------------

class BackgroundTasks:
    """Every task the test starts: a failed one fails the test at the next `check()`, and all of
    them are cancelled (and awaited) on exit."""

    def __init__(self) -> None:
        self._tasks: list[asyncio.Task[Any]] = []

    def start(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.append(task)
        return task

    def check(self) -> bool:
        for task in self._tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise AssertionError(f"background task {task.get_name()} failed"
                                     ) from task.exception()
        return True

    async def __aenter__(self) -> BackgroundTasks:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def let_traffic_run(seconds: float, tasks: BackgroundTasks) -> None:
    """A stretch of load with nothing to wait for (not a synchronisation)."""
    await asyncio.sleep(seconds)
    tasks.check()


# --- viewers -------------------------------------------------------------------------------------

Conversation = list[tuple[int, bool, str | None]]  # (id, hidden, content) in id order


def conversation_of(messages: Iterable[Mapping[str, Any]]) -> Conversation:
    return sorted((m["id"], bool(m["hidden"]), m["content"]) for m in messages)


class FeedView:
    """What a protocol-level viewer applied: every seq in the order it arrived, and the
    conversation built by the apply rules of docs/realtime.md ("Change events")."""

    def __init__(self, staff: bool) -> None:
        self.staff = staff
        self.seqs: list[int] = []
        self._messages: dict[int, Mapping[str, Any]] = {}

    @property
    def last_seq(self) -> int:
        return self.seqs[-1] if self.seqs else 0

    def apply(self, events: Iterable[Mapping[str, Any]]) -> None:
        for event in events:
            self.seqs.append(event["seq"])
            new = event["new"]
            # redacted for an attendee = {id, webinar_id, hidden, seq}: no content
            if new is not None and "content" in new and (self.staff or not new["hidden"]):
                self._messages[new["id"]] = new
            else:
                self._messages.pop(new["id"] if new is not None else event["old"]["id"], None)

    def conversation(self) -> Conversation:
        return conversation_of(self._messages.values())


class RawSocketViewer:
    """A bare WebSocket client: joins with the last seq it applied and, after any disconnect,
    connects again and rejoins from there. Keeps everything the server sent, unfiltered: a
    duplicate or a gap here is the server's."""

    def __init__(self, name: str, server: ServeProcess, person: Person, webinar_id: int, *,
                 staff: bool, heartbeats: bool) -> None:
        self.name, self.person, self.heartbeats = name, person, heartbeats
        self._server = server
        self._topic = f"webinar:{webinar_id}:messages"
        self.view = FeedView(staff)
        self.connections = 0
        self.joined = False
        self.bad_joins: list[dict[str, Any]] = []  # resume_from ≠ the last_seq sent
        self.error_frames: list[dict[str, Any]] = []

    @property
    def seqs(self) -> list[int]:
        return self.view.seqs

    def conversation(self) -> Conversation:
        return self.view.conversation()

    async def run(self) -> None:
        while True:
            try:
                await self._session()
            except (OSError, TimeoutError, WebSocketException):
                pass  # down, frozen past the open timeout, or closed by the server: rejoin
            self.joined = False
            await asyncio.sleep(0.1)

    async def _session(self) -> None:
        url = f"{self._server.ws_url}?token={self.person.token}"
        async with connect(url, compression=None, ping_interval=None, open_timeout=2,
                           close_timeout=1) as ws:
            self.connections += 1
            last_seq = self.view.last_seq
            await ws.send(json.dumps({"type": "join", "topic": self._topic, "last_seq": last_seq,
                                      "ref": str(self.connections)}))
            beating = asyncio.create_task(self._beat(ws)) if self.heartbeats else None
            try:
                while True:
                    frame = json.loads(await ws.recv())
                    if frame["type"] == "changes":
                        self.view.apply(frame["events"])
                    elif frame["type"] == "joined":
                        self.joined = True
                        if frame.get("resume_from", last_seq) != last_seq:
                            self.bad_joins.append({**frame, "sent_last_seq": last_seq})
                    elif frame["type"] == "error":
                        self.error_frames.append(frame)
            finally:
                if beating is not None:
                    beating.cancel()
                    await asyncio.gather(beating, return_exceptions=True)

    @staticmethod
    async def _beat(ws: ClientConnection) -> None:
        with contextlib.suppress(WebSocketException):
            while True:
                await asyncio.sleep(HEARTBEAT_S)
                await ws.send('{"type":"heartbeat"}')


class LongPoller:
    """A plain long-poll loop: `GET /changes?after_seq=N&wait=S`, then N = the answer's
    `last_seq`; a failed poll (down, reset, 5xx) is tried again from the same N."""

    def __init__(self, name: str, server: ServeProcess, person: Person, webinar_id: int, *,
                 staff: bool) -> None:
        self.name, self.person = name, person
        self._server = server
        self._path = f"/api/webinars/{webinar_id}/changes"
        self.view = FeedView(staff)
        self.after_seq = 0
        self.polls = self.failed_polls = 0

    @property
    def seqs(self) -> list[int]:
        return self.view.seqs

    def conversation(self) -> Conversation:
        return self.view.conversation()

    async def run(self) -> None:
        async with httpx.AsyncClient(base_url=self._server.base_url, headers=auth(self.person.token),
                                     timeout=POLL_WAIT_S + 3) as http:
            while True:
                try:
                    response = await http.get(self._path, params={"after_seq": self.after_seq,
                                                                  "wait": POLL_WAIT_S})
                except httpx.TransportError:
                    response = None
                if response is None or response.status_code >= 500:
                    self.failed_polls += 1
                    await asyncio.sleep(0.2)
                    continue
                assert response.status_code == 200, (self.name, response.status_code,
                                                      response.text)
                body = response.json()
                self.polls += 1
                self.view.apply(body["changes"])
                self.after_seq = body["last_seq"]


@dataclass
class SdkViewer:
    """An SDK client joined to the webinar; records the seq of every event its room yields."""

    name: str
    person: Person
    client: ChatClient
    room: Room
    seqs: list[int] = field(default_factory=list)

    async def record(self) -> None:
        async for event in self.room:
            self.seqs.append(event.seq)

    def conversation(self) -> Conversation:
        return [(m.id, m.hidden, m.content) for m in self.room.messages]


ViewerSpec = tuple[str, Person, ClientConfig, SocketGate | None]  # name, who, config, connect


async def open_sdk_viewers(stack: contextlib.AsyncExitStack, server: ServeProcess, webinar_id: int,
                           specs: list[ViewerSpec]) -> list[SdkViewer]:
    """Log in (e-mail + password) and join, all at once: one by one, the server's argon2 checks
    alone took ~5 s. Each client is closed by `stack`."""
    clients = []
    for _, person, config, gate in specs:
        kwargs: dict[str, Any] = {"connect": gate} if gate is not None else {}
        client = ChatClient(server.base_url, email=person.email, password=PASSWORD, config=config,
                            **kwargs)
        stack.push_async_callback(client.aclose)  # safe on a client that never started
        clients.append(client)
    await asyncio.gather(*(client.start() for client in clients))
    rooms = await asyncio.gather(*(client.join(webinar_id) for client in clients))
    return [SdkViewer(name, person, client, room)
            for (name, person, _, _), client, room in zip(specs, clients, rooms, strict=True)]


class LinkWatch:
    """Samples the SDK socket viewers every WATCH_EVERY_S and notes when each fallback activation
    and each socket loss was first seen (the SDK counts both in `client.stats`)."""

    def __init__(self, viewers: list[SdkViewer]) -> None:
        self.viewers = viewers
        self.fallbacks: list[tuple[str, float]] = []
        self.socket_losses: list[tuple[str, float]] = []

        self._seen = {v.name: (0, 0) for v in viewers}  # from 0: one during start-up counts too

    def sample(self) -> None:
        now = time.monotonic()
        for v in self.viewers:
            fallbacks, losses = v.client.stats.fallback_activations, v.client.stats.socket_failures
            self.fallbacks += [(v.name, now)] * (fallbacks - self._seen[v.name][0])
            self.socket_losses += [(v.name, now)] * (losses - self._seen[v.name][1])
            self._seen[v.name] = (fallbacks, losses)

    async def run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(WATCH_EVERY_S)


# --- senders and the moderator -------------------------------------------------------------------

async def post_until_acknowledged(http: httpx.AsyncClient, person: Person, body: dict[str, Any]
                                  ) -> tuple[dict[str, Any], int, int]:
    """POST /api/messages/create until 200 or 409 (both carry the stored message), re-sending the
    SAME clientMsgId after a timeout, a connection error or a 5xx. Returns (message, attempts,
    the final status)."""
    attempts = 0
    while True:
        attempts += 1
        try:
            response = await http.post("/api/messages/create", json=body, headers=auth(person.token),
                                       timeout=SEND_ATTEMPT_TIMEOUT_S)
        except httpx.TransportError:
            response = None
        if response is not None:
            if response.status_code == 200 or (response.status_code == 409
                                                and response.json()["code"] == "duplicate"):
                return response.json()["message"], attempts, response.status_code
            assert response.status_code >= 500, (response.status_code, response.text)
        await asyncio.sleep(min(0.5, 0.05 * 2 ** attempts))


@dataclass
class Sender:
    name: str
    person: Person
    sent: int = 0
    retries: int = 0
    acknowledged_by_409: int = 0  # an earlier attempt had stored it: the retry was deduplicated

    async def run(self, http: httpx.AsyncClient, webinar_id: int, stop: asyncio.Event,
                  acknowledged: dict[str, dict[str, Any]]) -> None:
        while not stop.is_set() and self.sent < MAX_MESSAGES_PER_SENDER:
            cmid = new_id()  # one id per message, reused by every retry
            body = {"webinarId": webinar_id, "content": f"{self.name} #{self.sent}",
                    "clientMsgId": cmid}
            message, attempts, status = await post_until_acknowledged(http, self.person, body)
            assert message["client_msg_id"] == cmid, message
            acknowledged[cmid] = message
            self.sent += 1
            self.retries += attempts - 1
            self.acknowledged_by_409 += status == 409
            await asyncio.sleep(SEND_EVERY_S)


@dataclass
class Moderator:
    """Hides and unhides recent messages, deletes one; remembers the state it left behind."""

    person: Person
    hidden: set[int] = field(default_factory=set)
    deleted: dict[str, Any] | None = None
    actions: int = 0
    retries: int = 0

    async def run(self, http: httpx.AsyncClient, stop: asyncio.Event,
                  acknowledged: dict[str, dict[str, Any]]) -> None:
        rng = random.Random(1234)
        while not stop.is_set():
            await asyncio.sleep(MODERATE_EVERY_S)
            deleted_id = self.deleted["id"] if self.deleted else None
            recent = [m for m in list(acknowledged.values())[-30:] if m["id"] != deleted_id]
            if len(recent) < 10:
                continue
            target = rng.choice(recent)
            if self.deleted is None and self.actions >= MODERATIONS_BEFORE_THE_DELETE:
                await self._until_done(http, "DELETE", f"/api/messages/{target['id']}")
                self.deleted = target
                self.hidden.discard(target["id"])
            else:
                hide = target["id"] not in self.hidden
                await self._until_done(http, "POST", f"/api/messages/{target['id']}/hide",
                                       {"hidden": hide})
                (self.hidden.add if hide else self.hidden.discard)(target["id"])
            self.actions += 1

    async def _until_done(self, http: httpx.AsyncClient, method: str, path: str,
                          body: dict[str, Any] | None = None) -> None:
        """Retry after a timeout, a connection error or a 5xx until 200. Hiding is idempotent; a
        DELETE that finds the message gone after an attempt whose outcome we never learned has
        done its work."""
        outcome_unknown = False
        while True:
            try:
                response = await http.request(method, path, json=body, headers=auth(self.person.token),
                                              timeout=SEND_ATTEMPT_TIMEOUT_S)
            except httpx.TransportError:
                response = None
            if response is not None:
                if response.status_code == 200 or (response.status_code == 404
                                                    and method == "DELETE" and outcome_unknown):
                    return
                assert response.status_code >= 500, (method, path, response.status_code,
                                                     response.text)
            outcome_unknown = True
            self.retries += 1
            await asyncio.sleep(0.1)


# --- reading the final state ---------------------------------------------------------------------

async def read_feed(http: httpx.AsyncClient, person: Person, webinar_id: int) -> dict[str, Any]:
    response = await http.get(f"/api/webinars/{webinar_id}/changes",
                              params={"after_seq": 0, "limit": 1000}, headers=auth(person.token))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["has_more"] is False, "more changes than one page: shorten the soak"
    return body


async def list_messages(http: httpx.AsyncClient, person: Person, webinar_id: int
                        ) -> list[dict[str, Any]]:
    response = await http.get(f"/api/webinars/{webinar_id}/messages", params={"limit": 500},
                              headers=auth(person.token))
    assert response.status_code == 200, response.text
    assert response.json()["has_more"] is False, "more messages than one page: shorten the soak"
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages


def seq_problems(seqs: list[int], head: int) -> str:
    """A short account of how `seqs` differs from 1…head (the lists are hundreds long)."""
    counts = Counter(seqs)
    duplicates = sorted(s for s, n in counts.items() if n > 1)
    missing = sorted(set(range(1, head + 1)) - set(counts))
    beyond = sorted(s for s in counts if not 1 <= s <= head)
    backwards = [(a, b) for a, b in zip(seqs, seqs[1:], strict=False) if b <= a]
    return (f"{len(seqs)} events, duplicates {duplicates[:20]}, missing {missing[:20]}, "
            f"not increasing at {backwards[:10]}, beyond the head {beyond[:20]}")


# --- the test ------------------------------------------------------------------------------------

async def test_soak_kill_freeze_and_moderation_lose_nothing(cli_server: CliServerFactory,
                                                            world: World) -> None:
    server = await cli_server(**SERVER_ENV)
    webinar_id = world.webinar.id
    faults = FaultLog()
    acknowledged: dict[str, dict[str, Any]] = {}  # clientMsgId → the message its 200/409 carried
    people = [world.alice, world.bob, world.host, world.moderator]

    async with contextlib.AsyncExitStack() as stack:
        http = await stack.enter_async_context(httpx.AsyncClient(base_url=server.base_url,
                                                                 timeout=10))
        refused = SocketGate()
        refused.set(refuse=True)  # a real ECONNREFUSED on every attempt: long-polling for good
        sdk_viewers = await open_sdk_viewers(stack, server, webinar_id, [
            *((f"sdk-{i}-{p.display_name}", p, SOCKET_VIEWER, None)
              for i, p in enumerate((people * 3)[:10])),
            *((f"sdk-poll-{p.display_name}", p, FORCED_POLLER, refused)
              for p in (world.alice, world.host))])
        socket_viewers, forced_pollers = sdk_viewers[:10], sdk_viewers[10:]
        raw_viewers = [
            RawSocketViewer("raw-Bob", server, world.bob, webinar_id, staff=False, heartbeats=True),
            RawSocketViewer("raw-Moderator", server, world.moderator, webinar_id, staff=True,
                            heartbeats=True),
            # never heartbeats: the server idle-closes it every CLIENT_IDLE_TIMEOUT, it rejoins
            RawSocketViewer("raw-Alice-silent", server, world.alice, webinar_id, staff=False,
                            heartbeats=False)]
        http_pollers = [
            LongPoller("poll-Bob", server, world.bob, webinar_id, staff=False),
            LongPoller("poll-Moderator", server, world.moderator, webinar_id, staff=True)]
        viewers: list[SdkViewer | RawSocketViewer | LongPoller] = [
            *socket_viewers, *forced_pollers, *raw_viewers, *http_pollers]

        # entered last, so exited first: every task is cancelled before the clients close
        tasks = await stack.enter_async_context(BackgroundTasks())
        for v in [*socket_viewers, *forced_pollers]:
            tasks.start(v.record(), v.name)
        for viewer in [*raw_viewers, *http_pollers]:
            tasks.start(viewer.run(), viewer.name)

        def socket_viewers_live() -> bool:
            return tasks.check() and all(
                v.client.status is ConnectionStatus.LIVE and not v.client.fallback
                for v in socket_viewers) and all(r.joined for r in raw_viewers if r.heartbeats)

        await eventually(lambda: socket_viewers_live() and all(
            v.client.fallback and v.room.polling for v in forced_pollers),
            timeout=15, message="viewers did not start")
        watch = LinkWatch(socket_viewers)
        tasks.start(watch.run(), "link-watch")

        stop = asyncio.Event()
        senders = [Sender(p.display_name, p) for p in people]
        moderator = Moderator(world.moderator)
        producers = [tasks.start(s.run(http, webinar_id, stop, acknowledged), f"send-{s.name}")
                     for s in senders]
        producers.append(tasks.start(moderator.run(http, stop, acknowledged), "moderator"))

        await let_traffic_run(CALM_S, tasks)
        for fault in FAULT_PLAN:
            with faults.window(fault):
                await FAULTS[fault](server)
            await eventually(socket_viewers_live, timeout=15, interval=0.05,
                             message=f"viewers did not recover from {fault}")
            await let_traffic_run(CALM_S, tasks)

        stop.set()  # senders finish the message they are on (acknowledged), then stop
        await eventually(lambda: tasks.check() and all(p.done() for p in producers), timeout=15,
                         interval=0.05, message="senders/moderator did not finish")

        feed = await read_feed(http, world.moderator, webinar_id)
        head = feed["last_seq"]

        def behind() -> list[str]:
            return [f"{v.name} at {v.seqs[-1] if v.seqs else 0}" for v in viewers
                    if (v.seqs[-1] if v.seqs else 0) < head]

        try:
            await eventually(lambda: tasks.check() and not behind(), timeout=SETTLE_TIMEOUT_S,
                             interval=0.05)
        except AssertionError:
            tasks.check()  # a failed viewer says more than "behind"
            raise AssertionError(f"viewers did not reach seq {head}: {behind()}") from None
        watch.sample()  # the last word on fallbacks and socket losses

        # 1. every acknowledged message stored exactly once, nothing else stored
        staff_list = await list_messages(http, world.moderator, webinar_id)
        rows = Counter(m["client_msg_id"] for m in staff_list)
        assert moderator.deleted is not None, "the moderator deleted nothing"
        expected = set(acknowledged) - {moderator.deleted["client_msg_id"]}
        assert not {c: n for c, n in rows.items() if n > 1}, "stored twice"
        assert not expected - set(rows), f"acknowledged but not stored: {expected - set(rows)}"
        assert not set(rows) - expected, f"stored but never acknowledged: {set(rows) - expected}"
        for row in staff_list:
            ack = acknowledged[row["client_msg_id"]]
            assert (row["id"], row["content"]) == (ack["id"], ack["content"]), (row, ack)
        changes = feed["changes"]
        assert [c["seq"] for c in changes] == list(range(1, head + 1)), "the feed has holes"
        assert sum(c["type"] == "INSERT" for c in changes) == len(acknowledged)
        assert [c["type"] for c in changes if (c["old"] or {}).get("id") == moderator.deleted["id"]
                ][-1:] == ["DELETE"], "the delete is not the deleted message's last change"
        assert {m["id"] for m in staff_list if m["hidden"]} == moderator.hidden

        # 2. every viewer: seq 1…head, each once, in order
        wrong_seqs = {v.name: seq_problems(v.seqs, head) for v in viewers
                      if v.seqs != list(range(1, head + 1))}
        assert not wrong_seqs, f"viewers with a gap, duplicate or disorder (head {head}): {wrong_seqs}"

        # 3. every viewer's conversation = the list API with its own token (same audience)
        lists = {p.email: conversation_of(await list_messages(http, p, webinar_id)) for p in people}
        diverged = {v.name: _difference(v.conversation(), lists[v.person.email]) for v in viewers
                    if v.conversation() != lists[v.person.email]}
        assert not diverged, f"viewers that did not converge on the list API: {diverged}"

        # 4. the SDK socket viewers fell back / lost their socket only because of a fault
        for what, seen in (("fell back to long-polling", watch.fallbacks),
                           ("lost its socket", watch.socket_losses)):
            unexplained = [(name, faults.at(t)) for name, t in seen if not faults.explains(t)]
            assert not unexplained, (f"on a healthy server a socket viewer {what}: {unexplained}; "
                                     f"fault windows: {faults.describe()}")

        # the faults did bite (otherwise the checks above prove little)
        kills = FAULT_PLAN.count("kill -9 + restart")
        assert all(v.client.stats.socket_failures >= kills for v in socket_viewers), [
            v.client.stats for v in socket_viewers]
        assert watch.fallbacks, "no socket viewer noticed a freeze"
        assert all(r.connections >= 1 + kills for r in raw_viewers), [
            (r.name, r.connections) for r in raw_viewers]
        assert all(p.failed_polls > 0 for p in http_pollers), [p.failed_polls for p in http_pollers]
        assert sum(s.retries for s in senders) > 0, "no send was ever retried"
        for v in forced_pollers:
            assert v.client.fallback and v.client.stats.socket_connects == 0, v.client.stats
            assert v.client.stats.polls > 0, v.client.stats
        for r in raw_viewers:
            assert not r.bad_joins and not r.error_frames, (r.name, r.bad_joins, r.error_frames)

        latest_loss = max(faults.lateness(t) for _, t in watch.socket_losses)
        latest_fallback = max(faults.lateness(t) for _, t in watch.fallbacks)
        print(  # shown with -rP / -s: what the soak went through
            f"\nsoak: {len(acknowledged)} messages acknowledged "
            f"({sum(s.retries for s in senders)} retries, "
            f"{sum(s.acknowledged_by_409 for s in senders)} by a 409), "
            f"{moderator.actions} moderations ({moderator.retries} retries), head seq {head}\n"
            f"faults: {faults.describe()}\n"
            f"socket viewers: {len(watch.fallbacks)} fallbacks (seen at "
            f"{sorted({faults.at(t) for _, t in watch.fallbacks})}), {len(watch.socket_losses)} "
            f"socket losses; at most {latest_fallback:.2f} s / {latest_loss:.2f} s after a fault's end\n"
            f"raw connections {[r.connections for r in raw_viewers]}; http polls "
            f"{[p.polls for p in http_pollers]} (failed {[p.failed_polls for p in http_pollers]}); "
            f"forced SDK polls {[v.client.stats.polls for v in forced_pollers]}; "
            f"{time.monotonic() - faults.t0:.1f} s since the server was up")


def _difference(got: Conversation, want: Conversation) -> dict[str, Any]:
    return {"only_viewer": sorted(set(got) - set(want))[:10],
            "only_list_api": sorted(set(want) - set(got))[:10], "sizes": (len(got), len(want))}
