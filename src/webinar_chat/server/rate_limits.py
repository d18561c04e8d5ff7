"""Rate limits (docs/operations.md, "Rate limits"): named token-bucket policies behind one small
interface, `await limiter.take(policy, key) -> Decision(allowed, retry_after_s)`.

A policy is "N per T seconds": a bucket of N tokens (the burst) refilled continuously at N/T
tokens per second (the sustained rate). A refusal takes nothing, so a client that waits out
`retry_after_s` gets through. `refund` gives tokens back (a log-in that succeeded, a create that
stored nothing), capped at the capacity.

Two backends with the same behaviour (tests/contract/test_rate_limits.py runs one set of tests
against both):
- `MemoryBackend` — in-process (the default, one process): bounded, least recently used first
  out;
- `RedisBackend` — when BUS_URL is a Redis URL, so that several processes share one budget.

Why not a library: `limits` has fixed, moving and sliding windows but no token bucket, and
cannot give one hit back; `aiolimiter` is in-process only; `pyrate-limiter` has Redis buckets
but no refund either. "A successful log-in does not consume" needs that refund — taking a token
first and giving it back keeps parallel guesses from outrunning the bucket, where "check, then
count the failure" would not. The bucket is twenty lines of Lua run atomically by Redis
(`EVALSHA`: one round trip; Redis's own clock, so the processes' clocks do not matter), over
redis-py's asyncio client, which the bus already depends on.

When Redis fails (down, slow, a script error), each policy says what happens: `fail_open`
policies (message creates, WebSocket connects) allow — a message is never refused because the
limiter broke — and the others (log-in, signup) fall back to this process's in-memory buckets,
so that a Redis outage does not open the door to password guessing. Either way the decision is
counted (`webinar_chat_rate_limiter_errors_total`) and logged (at most one line per
`LOG_EVERY_S`); after a failure Redis is left alone for `BREAKER_S` so that a Redis that hangs
costs one timeout, not one per request.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import ipaddress
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import structlog
from starlette.types import Scope
from starlette.websockets import WebSocket

from ..auth.tokens import TokenError
from .errors import ApiError, error_response
from .ws_protocol import TOKEN_EXTENSION

if TYPE_CHECKING:
    from ..settings import Settings
    from .metrics import Metrics
    from .state import AppState

log = structlog.get_logger(__name__)

# In-process buckets kept at most (~150 bytes each); the least recently used go first. A bucket
# that is forgotten is full again, which only ever errs on the side of allowing.
MAX_MEMORY_KEYS = 100_000
# Every Redis call gives up after this long (a limiter must not hold a request up for long).
REDIS_TIMEOUT_S = 0.5
# After a Redis failure, decisions skip Redis for this long (then the next call tries again).
BREAKER_S = 1.0
# At most one `rate_limiter_unavailable` line per this many seconds (with the count since).
LOG_EVERY_S = 10.0

# policy → (Settings attribute, environment variable, fails open?)
POLICY_SETTINGS: dict[str, tuple[str, str, bool]] = {
    "login_account_ip": ("rate_login_account_ip", "RATE_LIMIT_LOGIN_ACCOUNT_IP", False),
    "login_account": ("rate_login_account", "RATE_LIMIT_LOGIN_ACCOUNT", False),
    "login_ip": ("rate_login_ip", "RATE_LIMIT_LOGIN_IP", False),
    "signup_ip": ("rate_signup_ip", "RATE_LIMIT_SIGNUP_IP", False),
    "messages": ("rate_messages", "RATE_LIMIT_MESSAGES", True),
    "messages_staff": ("rate_messages_staff", "RATE_LIMIT_MESSAGES_STAFF", True),
    "ws_connect_ip": ("rate_ws_connect_ip", "RATE_LIMIT_WS_CONNECT_IP", True),
    "ws_connect_user": ("rate_ws_connect_user", "RATE_LIMIT_WS_CONNECT_USER", True),
}
# `webinar_chat_rate_limited_total{limit}` has these names, and `client_events` for the
# monitoring-events limit, which stays in-process (server/client_events.py): metrics.RATE_LIMITS.


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    capacity: int  # the burst
    period_s: float  # a full bucket refills over this long: `capacity / period_s` tokens per s
    fail_open: bool = True  # Redis failing: allow, or use this process's buckets

    @property
    def per_s(self) -> float:
        return self.capacity / self.period_s


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    retry_after_s: float = 0.0  # when refused: how long until the cost is available

    @property
    def retry_after_header(self) -> int:
        """`Retry-After` in whole seconds, at least 1 (never earlier than the bucket allows)."""
        return max(1, math.ceil(self.retry_after_s - 1e-9))


ALLOWED = Decision(True)


def parse_rate(value: str, name: str = "rate") -> tuple[int, float] | None:
    """"N/T" → (N, T): N tokens, refilled over T seconds. "off" (or "0", "") → None: no limit."""
    text = value.strip().lower()
    if text in ("", "off", "0", "none"):
        return None
    count, sep, period = text.partition("/")
    try:
        capacity, period_s = int(count), float(period)
    except ValueError:
        capacity, period_s = 0, 0.0
    if not sep or capacity < 1 or not period_s > 0 or not math.isfinite(period_s):
        raise ValueError(f"{name}: 'N/SECONDS' (e.g. 10/900) or 'off', not {value!r}")
    return capacity, period_s


def policies_from_settings(settings: Settings) -> list[Policy]:
    """The enabled policies; raises ValueError (naming the variable) for a malformed one."""
    policies = []
    for name, (attribute, variable, fail_open) in POLICY_SETTINGS.items():
        rate = parse_rate(getattr(settings, attribute), variable)
        if rate is not None:
            policies.append(Policy(name, rate[0], rate[1], fail_open))
    return policies


def _digest(key: str) -> str:
    # Keys hold e-mail addresses and IPs: Redis (and memory) get a digest, never the address.
    return hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=12).hexdigest()


class Backend(Protocol):
    async def apply(self, policy: Policy, key: str, cost: float) -> Decision:
        """Take `cost` tokens (a negative cost gives tokens back) from `key`'s bucket."""
        ...

    async def close(self) -> None: ...


class MemoryBackend:
    """Buckets in this process: (tokens, refilled_at) per (policy, key)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = MAX_MEMORY_KEYS) -> None:
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: collections.OrderedDict[tuple[str, str], tuple[float, float]] = \
            collections.OrderedDict()

    def apply_now(self, policy: Policy, key: str, cost: float) -> Decision:
        now = self.clock()
        slot = (policy.name, key)
        state = self._buckets.get(slot)
        if state is None:
            tokens = float(policy.capacity)
        else:
            self._buckets.move_to_end(slot)
            tokens = min(policy.capacity, state[0] + max(0.0, now - state[1]) * policy.per_s)
        if cost > 0 and tokens < cost:
            decision = Decision(False, (cost - tokens) / policy.per_s)
        else:
            tokens = min(float(policy.capacity), tokens - cost)
            decision = ALLOWED
        self._buckets[slot] = (tokens, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return decision

    async def apply(self, policy: Policy, key: str, cost: float) -> Decision:
        return self.apply_now(policy, key, cost)

    async def close(self) -> None:
        self._buckets.clear()


# KEYS[1]: the bucket (a hash: tokens, at). ARGV: capacity, tokens per second, cost.
# → {1, "0"} allowed, {0, "<seconds>"} refused (a string: Lua numbers come back as integers).
# The bucket expires once it would be full again: a missing bucket is a full one.
TOKEN_BUCKET_LUA = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1])
local at = tonumber(state[2])
if tokens == nil or at == nil then
  tokens = capacity
else
  tokens = math.min(capacity, tokens + math.max(0, now - at) * rate)
end
local allowed = 1
local retry = 0
if cost > 0 and tokens < cost then
  allowed = 0
  retry = (cost - tokens) / rate
else
  tokens = math.min(capacity, tokens - cost)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((capacity - tokens) / rate * 1000) + 1000)
return {allowed, tostring(retry)}
"""


class RedisBackend:
    """Buckets in Redis, shared by every process that uses the same Redis and `prefix`."""

    def __init__(self, url: str, prefix: str, *, timeout_s: float = REDIS_TIMEOUT_S) -> None:
        import redis.asyncio as aioredis

        self.prefix = prefix
        self.client = aioredis.Redis.from_url(url, socket_timeout=timeout_s,
                                              socket_connect_timeout=timeout_s)
        self.script = self.client.register_script(TOKEN_BUCKET_LUA)

    async def apply(self, policy: Policy, key: str, cost: float) -> Decision:
        allowed, retry = await self.script(keys=[f"{self.prefix}:{policy.name}:{key}"],
                                           args=[policy.capacity, repr(policy.per_s), repr(cost)])
        if int(allowed) == 1:
            return ALLOWED
        return Decision(False, float(retry))

    async def close(self) -> None:
        await self.client.aclose()


class RateLimiter:
    def __init__(self, policies: Iterable[Policy], backend: Backend, *,
                 metrics: Metrics | None = None, trusted_proxies: str = "",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.policies = {p.name: p for p in policies}
        self.trusted_proxies = TrustedProxies(trusted_proxies)
        self.backend = backend
        self.metrics = metrics
        self.clock = clock
        # Where decisions go while the shared backend fails (policies that do not fail open).
        self.fallback = backend if isinstance(backend, MemoryBackend) else MemoryBackend()
        self._skip_until = 0.0
        self._last_logged = -math.inf
        self._unlogged = 0

    def enabled(self, name: str) -> bool:
        return name in self.policies

    async def take(self, name: str, key: str, cost: float = 1) -> Decision:
        """Take `cost` tokens from `key`'s bucket of policy `name` (allowed at once if the policy
        is off). A refusal is counted in `webinar_chat_rate_limited_total{limit}`."""
        policy = self.policies.get(name)
        if policy is None:
            return ALLOWED
        return self._counted(name, await self._apply(policy, _digest(key), cost))

    async def refund(self, name: str, key: str, cost: float = 1) -> None:
        """Give back what `take` took (capped at the capacity)."""
        policy = self.policies.get(name)
        if policy is not None:
            await self._apply(policy, _digest(key), -cost)

    async def take_all(self, takes: Sequence[tuple[str, str]]) -> Decision:
        """One token from each (policy, key), all or nothing: if any bucket refuses, the others
        get theirs back and the answer waits for the slowest refusal."""
        if self.backend is self.fallback:
            # In this process, nothing to wait for: no task per bucket (a gather of two takes
            # was ~7 % of the server's CPU in a reconnect storm, every socket paying it).
            decisions = [self.take_now(name, key) for name, key in takes]
        else:
            decisions = await asyncio.gather(*(self.take(name, key) for name, key in takes))
        refused = [d for d in decisions if not d.allowed]
        if not refused:
            return ALLOWED
        given_back = [(name, key) for (name, key), d in zip(takes, decisions, strict=True)
                      if d.allowed]
        await self.refund_all(given_back)
        return Decision(False, max(d.retry_after_s for d in refused))

    async def refund_all(self, takes: Sequence[tuple[str, str]]) -> None:
        if self.backend is self.fallback:
            for name, key in takes:
                self.refund_now(name, key)
        else:
            await asyncio.gather(*(self.refund(name, key) for name, key in takes))

    def take_now(self, name: str, key: str, cost: float = 1) -> Decision:
        """`take` on the in-process backend (only when it is the backend: `take_all`)."""
        policy = self.policies.get(name)
        if policy is None:
            return ALLOWED
        return self._counted(name, self.fallback.apply_now(policy, _digest(key), cost))

    def refund_now(self, name: str, key: str, cost: float = 1) -> None:
        policy = self.policies.get(name)
        if policy is not None:
            self.fallback.apply_now(policy, _digest(key), -cost)

    def _counted(self, name: str, decision: Decision) -> Decision:
        if not decision.allowed and self.metrics is not None:
            self.metrics.rate_limited.labels(limit=name).inc()
        return decision

    async def _apply(self, policy: Policy, key: str, cost: float) -> Decision:
        if self.backend is self.fallback:
            return self.fallback.apply_now(policy, key, cost)
        if self.clock() >= self._skip_until:
            try:
                return await self.backend.apply(policy, key, cost)
            except Exception as exc:  # Redis down, slow, refused the script: never the request's
                self._skip_until = self.clock() + BREAKER_S
                self._failed(policy, exc)
        else:
            self._failed(policy, None)
        if policy.fail_open:
            return ALLOWED
        return self.fallback.apply_now(policy, key, cost)

    def _failed(self, policy: Policy, error: BaseException | None) -> None:
        if self.metrics is not None:
            self.metrics.rate_limiter_errors.inc()
        self._unlogged += 1
        now = self.clock()
        if error is not None and now - self._last_logged >= LOG_EVERY_S:
            log.warning("rate_limiter_unavailable", limit=policy.name,
                        error=f"{type(error).__name__}: {error}", decisions=self._unlogged,
                        then="allow" if policy.fail_open else "per-process limit")
            self._last_logged = now
            self._unlogged = 0

    async def close(self) -> None:
        await self.backend.close()
        if self.fallback is not self.backend:
            await self.fallback.close()


def create_rate_limiter(settings: Settings, metrics: Metrics | None = None) -> RateLimiter:
    """Redis when BUS_URL is a Redis URL (the processes share the buckets), else in-process."""
    policies = policies_from_settings(settings)
    backend: Backend
    if settings.bus_url.startswith(("redis://", "rediss://", "unix://")):
        backend = RedisBackend(settings.bus_url, f"{settings.bus_channel}:rl")
    else:
        backend = MemoryBackend()
    return RateLimiter(policies, backend, metrics=metrics,
                       trusted_proxies=settings.trusted_proxies)


# --- who is asking -------------------------------------------------------------------------------

class TrustedProxies:
    """TRUSTED_PROXIES: addresses and networks (comma-separated, e.g. "127.0.0.1, 10.0.0.0/8")
    whose X-Forwarded-For is believed."""

    def __init__(self, spec: str) -> None:
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for item in (part.strip() for part in spec.split(",")):
            if item:
                try:
                    self.networks.append(ipaddress.ip_network(item, strict=False))
                except ValueError:
                    raise ValueError(f"TRUSTED_PROXIES: addresses or networks, not {item!r}"
                                     ) from None

    def __bool__(self) -> bool:
        return bool(self.networks)

    def __contains__(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.networks)


def client_ip(scope: Scope, trusted: TrustedProxies) -> str:
    """The peer's address; behind a trusted proxy, the address that proxy saw.

    nginx's `$proxy_add_x_forwarded_for` (deploy/nginx/webinar-chat.conf) *appends* the peer to
    whatever X-Forwarded-For the client sent, so the first entry is the client's own words and
    would let anyone pick a new address per request. The entry to believe is the last one that
    a trusted proxy wrote: walking from the right, the first address that is not itself a
    trusted proxy (with one proxy in front: the last entry; with none sent by the client: the
    only one)."""
    client = scope.get("client")
    peer = str(client[0]) if client else "unknown"
    if not trusted or peer not in trusted:
        return peer
    forwarded = ",".join(value.decode("latin-1") for name, value in scope.get("headers", ())
                         if name == b"x-forwarded-for")
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    for hop in reversed(hops):
        if hop not in trusted:
            return hop
    return hops[0] if hops else peer


# --- answers -------------------------------------------------------------------------------------

def rate_limited(decision: Decision, message: str) -> ApiError:
    """The answer to every refusal: 429, Retry-After in whole seconds (≥ 1), and
    `{"success": false, "error", "code": "rate_limited", "retry_after": <the same seconds>}`."""
    seconds = decision.retry_after_header
    return ApiError(429, "rate_limited", f"{message}; retry in {seconds} s",
                    headers={"Retry-After": str(seconds)}, extra={"retry_after": seconds})


@dataclass(frozen=True, slots=True)
class Admitted:
    """A handshake let through. `connect_user`: the user whose `ws_connect_user` bucket it took
    from (the token was in the URL), so that the socket does not pay again for that user."""

    connect_user: int | None = None


async def admit_websocket(state: AppState, websocket: WebSocket) -> Admitted | None:
    """Before the handshake is accepted: one connect from the client IP's bucket and, when the
    access token came in the URL (`?token=`), from the user's. Refused: an HTTP 429 answer to
    the upgrade (the WebSocket denial response) with Retry-After and the JSON error; None.
    The browser page and the SDK send their token in the first frame instead, after the
    handshake: for them only the per-IP limit applies here, and the user's connect is taken
    when that frame gives the socket its user (server/realtime.py, `_take_user_connect`)."""
    limiter = state.limits
    takes = [("ws_connect_ip", client_ip(websocket.scope, limiter.trusted_proxies))]
    token = (websocket.scope.get("extensions", {}).get(TOKEN_EXTENSION)
             or websocket.query_params.get("token"))
    connect_user = None
    if token and limiter.enabled("ws_connect_user"):
        try:
            connect_user = state.tokens.verify_access(token).user_id
            takes.append(("ws_connect_user", str(connect_user)))
        except TokenError:
            pass  # the session refuses it after the handshake (4001), as before
    decision = await limiter.take_all(takes)
    if decision.allowed:
        return Admitted(connect_user)
    error = rate_limited(decision, "Too many connections")
    response = error_response(error.status, error.code, error.message, headers=error.headers,
                              extra=error.extra)
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(response)
    else:  # a server without the denial extension: the handshake is refused (403)
        await websocket.close(code=1013)
    return None
