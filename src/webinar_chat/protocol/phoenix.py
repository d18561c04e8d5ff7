"""Supabase Realtime's protocol (Phoenix channels) as a session without I/O (docs/supabase.md).

Unmodified supabase-js and realtime-py clients subscribe to `postgres_changes` on
`public.messages` filtered by `webinar_id=eq.N`; this module turns their frames into the same
subscriptions, access checks, replays and live batches as our own protocol (`Session`, which it
extends: every rule of docs/delivery.md holds unchanged), and our changes into their pushes.

Frames: `vsn=1.0.0` (or none) is JSON objects `{topic, event, payload, ref}` (clients add
`join_ref`), `vsn=2.0.0` is JSON arrays `[join_ref, ref, topic, event, payload]`; each connection
is answered in its own. What a change becomes for a viewer (`view_of`):

    our change               staff                       attendee (may see it / may not)
    INSERT                   INSERT record               INSERT record   / nothing
    UPDATE (hide / unhide)   UPDATE record, old {id}     INSERT record   / DELETE old {id}
    DELETE                   DELETE old {id}             DELETE old {id} / nothing
    ROOM, QUESTION           nothing (not the messages table)

so a message hidden by a moderator leaves an attendee's list (a DELETE) and comes back with an
INSERT when unhidden — the seed's INSERT/DELETE handlers do the right thing without knowing about
moderation. An attendee's own staff-only message (hosts_only mode) reads as staff see it.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from .events import (
    Audience,
    Change,
    ChangeOp,
    Message,
    is_private_to,
    iso_utc,
    message_payload,
    visible_to,
)
from .session import (
    Action,
    Close,
    Identity,
    Send,
    Session,
    Subscription,
    TokenRejected,
    Unsubscribe,
)

V1 = "1.0.0"
V2 = "2.0.0"
EVENTS = ("*", "INSERT", "UPDATE", "DELETE")
SCHEMA, TABLE = "public", "messages"
PHOENIX_TOPIC = "phoenix"
CHANNEL_PREFIX = "realtime:"
# A connection that sends this many frames we cannot read is closed (Phoenix would crash it).
MAX_BAD_FRAMES = 10

# The `columns` of every push (clients require the key; supabase-js converts values by type).
COLUMNS: list[dict[str, str]] = [
    {"name": "id", "type": "int8"},
    {"name": "webinar_id", "type": "int8"},
    {"name": "user_id", "type": "int8"},
    {"name": "content", "type": "text"},
    {"name": "created_at", "type": "timestamptz"},
    {"name": "hidden", "type": "bool"},
    {"name": "client_msg_id", "type": "uuid"},
    {"name": "seq", "type": "int8"},
    {"name": "visibility", "type": "text"},
    {"name": "author_role", "type": "text"},
    {"name": "display_name", "type": "text"},
]
_COLUMNS_JSON = orjson.dumps(COLUMNS)


class FrameError(ValueError):
    """A client frame that is not a Phoenix message in the connection's serializer."""


@dataclass(frozen=True, slots=True)
class Frame:
    join_ref: Any
    ref: Any
    topic: str
    event: str
    payload: dict[str, Any]


def serializer_for(vsn: str | None) -> str:
    """The connection's format from its `vsn` URL parameter: 2.0.0 → arrays, else objects."""
    return V2 if vsn == V2 else V1


def decode(text: str, vsn: str) -> Frame:
    try:
        raw = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise FrameError("not JSON") from exc
    if vsn == V2:
        if not isinstance(raw, list) or len(raw) != 5:
            raise FrameError("a vsn 2.0.0 frame is [join_ref, ref, topic, event, payload]")
        join_ref, ref, topic, event, payload = raw
    else:
        if not isinstance(raw, dict):
            raise FrameError("a vsn 1.0.0 frame is {topic, event, payload, ref}")
        join_ref, ref = raw.get("join_ref"), raw.get("ref")
        topic, event, payload = raw.get("topic"), raw.get("event"), raw.get("payload")
    if not isinstance(topic, str) or not isinstance(event, str):
        raise FrameError("topic and event must be strings")
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        raise FrameError("payload must be an object")
    return Frame(join_ref, ref, topic, event, payload)


def phoenix_token(text: str, vsn: str) -> str | None:
    """The `access_token` of a client frame (a join's or a push's), if it has one."""
    try:
        token = decode(text, vsn).payload.get("access_token")
    except FrameError:
        return None
    return token if isinstance(token, str) and token else None


def encode(vsn: str, join_ref: Any, ref: Any, topic: str, event: str,
           payload: dict[str, Any]) -> bytes:
    if vsn == V2:
        return orjson.dumps([join_ref, ref, topic, event, payload])
    # V1 server frames carry exactly these four keys (phoenix's v1 serializer).
    return orjson.dumps({"topic": topic, "event": event, "payload": payload, "ref": ref})


def reply(vsn: str, frame: Frame, status: str, response: dict[str, Any]) -> Send:
    return Send(encode(vsn, frame.join_ref, frame.ref, frame.topic, "phx_reply",
                       {"status": status, "response": response}))


# --- bindings ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Binding:
    id: int
    event: str  # one of EVENTS


def binding_id(entry: dict[str, Any]) -> int:
    """A positive int from the entry itself (like Elixir's `phash2`): every client that binds the
    same way gets the same id, so their pushes are one encoding (clients ignore a 0: never 0)."""
    return zlib.crc32(orjson.dumps(entry, option=orjson.OPT_SORT_KEYS)) % 0x7FFFFFFF + 1


def parse_bindings(config: Any) -> tuple[int, list[dict[str, Any]], tuple[Binding, ...]]:
    """`config.postgres_changes` → (webinar id, the entries echoed with their ids, bindings).
    Raises ValueError with the reason for the join's error reply."""
    entries = config.get("postgres_changes") if isinstance(config, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ValueError("this endpoint serves postgres_changes on public.messages only: bind "
                         "{event, schema: 'public', table: 'messages', filter: 'webinar_id=eq.N'}")
    webinar_id: int | None = None
    echoed: list[dict[str, Any]] = []
    bindings: list[Binding] = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise ValueError("each postgres_changes entry must be an object")
        # realtime-py ≤ 2.27 wrote "events"; the echo keeps the client's own keys.
        event = entry.get("event", entry.get("events"))
        if not isinstance(event, str) or event.upper() not in EVENTS:
            raise ValueError(f"event must be one of {', '.join(EVENTS)}")
        if entry.get("schema", SCHEMA) != SCHEMA or entry.get("table") != TABLE:
            raise ValueError("only the table public.messages is available")
        webinar = _webinar_filter(entry.get("filter"))
        if webinar is None:
            raise ValueError("filter must be 'webinar_id=eq.N'")
        if webinar_id is not None and webinar != webinar_id:
            raise ValueError("all bindings of a channel must filter the same webinar")
        webinar_id = webinar
        bid = binding_id(entry)
        echoed.append({**entry, "id": bid})
        bindings.append(Binding(bid, event.upper()))
    assert webinar_id is not None
    return webinar_id, echoed, tuple(bindings)


def _webinar_filter(value: Any) -> int | None:
    if not isinstance(value, str) or not value.startswith("webinar_id=eq."):
        return None
    digits = value[len("webinar_id=eq."):]
    return int(digits) if digits.isdigit() and len(digits) <= 18 else None


# --- changes → pushes -------------------------------------------------------------------------


def record_of(message: Message) -> dict[str, Any]:
    """The row as the API shows it to staff (`message_payload`), flat: a table's columns have no
    nested `user`, so its name and role become `display_name` and `author_role`."""
    row = message_payload(message, Audience.STAFF)
    user = row.pop("user")
    return {**row, "author_role": user["role"], "display_name": user["display_name"]}


def view_of(change: Change, audience: Audience) -> tuple[str, bytes] | None:
    """(type, the push's `data` as JSON) of `change` for `audience`, or None when it shows
    nothing; encoded once per change and audience (cached on the change)."""
    key: Any = ("phoenix", audience)
    cached: Any = change.encoded.get(key)
    if cached is not None:
        return cached or None  # () is "nothing", remembered too
    view = _view(change, audience)
    change.encoded[key] = view or ()  # type: ignore[assignment]
    return view


def _view(change: Change, audience: Audience) -> tuple[str, bytes] | None:
    if change.op not in (ChangeOp.INSERT, ChangeOp.UPDATE, ChangeOp.DELETE):
        return None
    message = change.message
    if message is None or change.op is ChangeOp.DELETE:
        if audience is Audience.ATTENDEE and message is not None and message.visibility == "staff":
            return None  # never shown to this attendee: nothing to take away
        return _data(change, "DELETE", None, {"id": change.message_id})
    staff = audience is Audience.STAFF
    if change.op is ChangeOp.INSERT:
        if not visible_to(message, audience):
            return None
        return _data(change, "INSERT", record_of(message), None)
    if staff:
        return _data(change, "UPDATE", record_of(message), {"id": change.message_id})
    if visible_to(message, audience):
        return _data(change, "INSERT", record_of(message), None)  # unhidden: back in the list
    if message.visibility == "staff":
        return None
    return _data(change, "DELETE", None, {"id": change.message_id})  # hidden: out of the list


def _data(change: Change, kind: str, record: dict[str, Any] | None,
          old: dict[str, Any] | None) -> tuple[str, bytes]:
    message = change.message
    at = message.created_at if kind == "INSERT" and message is not None else datetime.now(UTC)
    data: dict[str, Any] = {"schema": SCHEMA, "table": TABLE, "commit_timestamp": iso_utc(at),
                            "type": kind}
    if record is not None:
        data["record"] = record
    if old is not None:
        data["old_record"] = old
    body = orjson.dumps(data)
    # `columns` is the same list for every push: spliced in rather than encoded each time;
    # `errors` is null (realtime-py drops a push whose errors is a list).
    return kind, body[:-1] + b',"columns":' + _COLUMNS_JSON + b',"errors":null}'


class Channel:
    """One joined Phoenix channel: the subscription's `encoding` (protocol/session.py). The hub
    shares the frames of a batch between channels with the same `key` (format, topic, bindings:
    every client subscribed the same way), so a batch is encoded once per audience, not per
    socket."""

    __slots__ = ("vsn", "topic", "join_ref", "ref", "echoed", "bindings", "key", "replied")

    def __init__(self, vsn: str, topic: str, join_ref: Any, ref: Any,
                 echoed: list[dict[str, Any]], bindings: tuple[Binding, ...]) -> None:
        self.vsn = vsn
        self.topic = topic
        self.join_ref = join_ref
        self.ref = ref
        self.echoed = echoed
        self.bindings = bindings
        self.key = (vsn, topic, tuple((b.id, b.event) for b in bindings))
        self.replied = False  # the join was answered ok (later refusals close it instead)

    def push(self, event: str, payload: dict[str, Any], *, join_ref: Any = None) -> bytes:
        return encode(self.vsn, join_ref, None, self.topic, event, payload)

    def frames(self, changes: list[Change], audience: Audience,
               viewer_id: int | None) -> list[bytes]:
        """The `postgres_changes` pushes of `changes` for this channel's viewer."""
        out: list[bytes] = []
        for change in changes:
            seen_as = audience
            if audience is Audience.ATTENDEE and viewer_id is not None \
                    and is_private_to(change, viewer_id):
                seen_as = Audience.STAFF  # their own staff-only message, whole
            view = view_of(change, seen_as)
            if view is None:
                continue
            kind, data = view
            ids = [b.id for b in self.bindings if b.event == "*" or b.event == kind]
            if not ids:
                continue
            payload = b'{"ids":' + orjson.dumps(ids) + b',"data":' + data + b"}"
            if self.vsn == V2:
                out.append(b"[null,null," + orjson.dumps(self.topic) + b',"postgres_changes",'
                           + payload + b"]")
            else:
                out.append(b'{"topic":' + orjson.dumps(self.topic)
                           + b',"event":"postgres_changes","payload":' + payload + b',"ref":null}')
        return out


def _is_apikey_like(token: str, apikey: str | None) -> bool:
    """Tokens supabase-js sends that are not a user's: the connection's apikey (re-sent on every
    heartbeat) and publishable keys (`sb_…`)."""
    return token == apikey or token.startswith("sb_")


class PhoenixSession(Session):
    """`Session` spoken in Phoenix frames. Channels are keyed by webinar like our subscriptions
    (one per webinar per connection: a second channel on the same webinar replaces the first,
    which is closed); `topics` maps each channel's topic to its webinar."""

    def __init__(self, *, vsn: str, apikey: str | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.vsn = vsn
        self.apikey = apikey
        self.topics: dict[str, int] = {}

    # --- client frames ---------------------------------------------------------------------------

    def on_connect(self, token: str | None, now: float, heartbeat_interval: float) -> list[Action]:
        # No hello in Phoenix. The URL's apikey is a user's token only if it verifies as one.
        if token and self._check(token, now)[0] is not None:
            return self._set_token(token, now, reply=False)
        return []

    def on_text(self, text: str, now: float) -> list[Action]:
        try:
            frame = decode(text, self.vsn)
        except FrameError:
            self._bad_frames += 1
            return [Close(4400, "protocol error")] if self._bad_frames > MAX_BAD_FRAMES else []
        if frame.topic == PHOENIX_TOPIC:
            if frame.event == "heartbeat":
                return [reply(self.vsn, frame, "ok", {})]
            return []
        if frame.event == "phx_join":
            return self._phx_join(frame, now)
        webinar_id = self.topics.get(frame.topic)
        if webinar_id is None:
            return [reply(self.vsn, frame, "error", {"reason": "unmatched topic"})]
        if frame.event == "access_token":
            return self._access_token(frame.payload.get("access_token"), now)
        if frame.event == "phx_leave":
            sub = self.subscriptions.pop(webinar_id, None)
            del self.topics[frame.topic]
            actions: list[Action] = [Unsubscribe(sub)] if sub is not None else []
            actions.append(reply(self.vsn, frame, "ok", {}))
            if sub is not None:
                actions.append(self._close_frame(sub.encoding))
            return actions
        # broadcast, presence: not served on this endpoint (docs/supabase.md); ack what asks for one
        if frame.ref is not None and frame.event in ("broadcast", "presence"):
            return [reply(self.vsn, frame, "error",
                          {"reason": f"{frame.event} is not supported on this endpoint"})]
        return []

    def _phx_join(self, frame: Frame, now: float) -> list[Action]:
        if not frame.topic.startswith(CHANNEL_PREFIX):
            return [reply(self.vsn, frame, "error", {"reason": "topic must be realtime:<name>"})]
        try:
            webinar_id, echoed, bindings = parse_bindings(frame.payload.get("config"))
        except ValueError as exc:
            return [reply(self.vsn, frame, "error", {"reason": str(exc)})]
        actions: list[Action] = []
        # The join's access_token (a rejoin carries it; a first join may not: the apikey then).
        for candidate in (frame.payload.get("access_token"), self.apikey):
            if not isinstance(candidate, str) or not candidate:
                continue
            identity, refusal = self._check(candidate, now)
            if identity is None:
                if _is_apikey_like(candidate, self.apikey):
                    continue  # an anon key, not a user's token: not a refusal
                return [reply(self.vsn, frame, "error", {"reason": refusal})]
            if self._subscriber_id is not None and identity.user_id != self._subscriber_id:
                actions += self._close_all("Unauthorized: the token is another user's")
            actions += self._set_token(candidate, now, reply=False)
            break
        if self.identity is None:
            return [reply(self.vsn, frame, "error",
                          {"reason": "Unauthorized: a valid access token is required"})]
        # A rejoin of the same topic (or another topic on the same webinar) replaces its channel.
        previous_id = self.topics.pop(frame.topic, None)
        if previous_id is not None and previous_id != webinar_id:
            old = self.subscriptions.pop(previous_id, None)
            if old is not None:
                actions.append(Unsubscribe(old))
        current = self.subscriptions.get(webinar_id)
        if current is not None and current.topic != frame.topic:
            self.topics.pop(current.topic, None)
            actions.append(self._close_frame(current.encoding))
        channel = Channel(self.vsn, frame.topic, frame.join_ref, frame.ref, echoed, bindings)
        actions += self._open(webinar_id, None, frame.ref, frame.topic, encoding=channel)
        joined = self.subscriptions.get(webinar_id)
        if joined is not None and joined.encoding is channel:
            self.topics[frame.topic] = webinar_id
        return actions

    def _access_token(self, token: Any, now: float) -> list[Action]:
        """A pushed token: the apikey (supabase-js re-sends it on every heartbeat) and null leave
        the user's token in place; a user's token renews it; a refused one closes every channel."""
        if not isinstance(token, str) or not token:
            return []
        identity, _refusal = self._check(token, now)
        if identity is None and _is_apikey_like(token, self.apikey):
            return []
        if identity is not None and self._subscriber_id is not None \
                and identity.user_id != self._subscriber_id:
            # Another user on this connection: nothing of the previous user's carries over.
            actions = self._close_all("Unauthorized: the token is another user's")
            return actions + self._set_token(token, now, reply=False)
        return self._set_token(token, now, reply=False)

    def _check(self, token: str, now: float) -> tuple[Identity | None, str]:
        """(the user's identity, "") for a valid token, else (None, why: "token_expired: …")."""
        try:
            identity = self.verify_token(token)
        except TokenRejected as exc:
            return None, f"{exc.code}: {exc}"
        if identity.expires_at <= now:
            return None, "token_expired: Access token expired"
        return identity, ""

    # --- the frames (Session's hooks) ------------------------------------------------------------

    def _joined(self, sub: Subscription, head_seq: int, role: str) -> list[Action]:
        channel: Channel = sub.encoding
        channel.replied = True
        name = channel.topic[len(CHANNEL_PREFIX):]
        return [
            Send(encode(self.vsn, channel.join_ref, channel.ref, channel.topic, "phx_reply",
                        {"status": "ok", "response": {"postgres_changes": channel.echoed}})),
            Send(channel.push("system", {"extension": "postgres_changes", "status": "ok",
                                         "message": "Subscribed to PostgreSQL", "channel": name},
                              join_ref=channel.join_ref)),
        ]

    def _denied(self, sub: Subscription, code: str, message: str,
                extra: dict[str, Any]) -> list[Action]:
        channel: Channel = sub.encoding
        if self.topics.get(channel.topic) == sub.webinar_id:
            del self.topics[channel.topic]
        reason = f"{code}: {message}"
        if not channel.replied:
            # The join's answer: supabase-js shows CHANNEL_ERROR with the reason (and retries).
            return [Send(encode(self.vsn, channel.join_ref, channel.ref, channel.topic,
                                "phx_reply", {"status": "error", "response": {"reason": reason}}))]
        # A live channel refused later (a ban, a lost registration): a system error, then close.
        return [Send(channel.push("system", {"extension": "system", "status": "error",
                                             "message": reason,
                                             "channel": channel.topic[len(CHANNEL_PREFIX):]},
                                  join_ref=channel.join_ref)),
                self._close_frame(channel)]

    def _change_frames(self, sub: Subscription, changes: list[Change]) -> list[Action]:
        channel: Channel = sub.encoding
        return [Send(f) for f in channel.frames(changes, sub.audience, sub.viewer_id)]

    def _token_refused(self, code: str, message: str) -> list[Action]:
        # Phoenix has no "waiting for a token": every channel gets the error and is closed.
        actions = self._close_all(f"{code}: {message}")
        self._subscriber_id = None
        return actions

    def _too_many_topics(self, topic: Any, ref: Any) -> list[Action]:
        # The join's answer (a join's ref is its join_ref, as the clients send it).
        return [Send(encode(self.vsn, ref, ref, str(topic), "phx_reply",
                            {"status": "error",
                             "response": {"reason": f"At most {self.max_topics} channels per "
                                                    "connection"}}))]

    def _close_all(self, reason: str) -> list[Action]:
        actions: list[Action] = []
        for sub in list(self.subscriptions.values()):
            channel: Channel = sub.encoding
            actions.append(Unsubscribe(sub))
            actions.append(Send(channel.push("system", {
                "extension": "system", "status": "error", "message": reason,
                "channel": channel.topic[len(CHANNEL_PREFIX):]}, join_ref=channel.join_ref)))
            actions.append(self._close_frame(channel))
        self.subscriptions.clear()
        self.topics.clear()
        return actions

    def _close_frame(self, channel: Channel) -> Send:
        return Send(encode(self.vsn, channel.join_ref, channel.join_ref, channel.topic,
                           "phx_close", {}))
