"""One Settings object, read from the environment once and passed explicitly (no import-time state)."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

DEFAULT_DATABASE_URL = "sqlite:///./webinar-chat.db"


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw not in (None, "") else default


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw not in (None, "") else default


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    host: str = "127.0.0.1"
    port: int = 8000
    # HS256 signing key for access tokens. Empty ⇒ resolved by `resolve_jwt_secret` (a per-database
    # secret file for SQLite; PostgreSQL deployments with several processes must share one).
    jwt_secret: str = ""
    # Access tokens are short-lived so that a ban or a log-out takes effect within minutes even on
    # servers that cache nothing; refresh tokens rotate and are revocable.
    access_token_ttl_s: int = 900
    refresh_token_ttl_s: int = 30 * 24 * 3600
    max_message_length: int = 2000
    # Coalescing window for one room's changes: long enough to batch a busy room into few frames,
    # short enough to stay far below the 250 ms p99 delivery target. An idle room flushes at once.
    realtime_tick_ms: int = 25
    # A flush to thousands of sockets is cut into slices so that sends and database completions
    # run in between: at most this many subscribers per slice, and at most this long. A write
    # to a reader that keeps up costs ~20 µs here, so 100 held the loop ~2 ms at every one of a
    # send's loop passes (POST p99 ~36 ms on SQLite, ~56 on PostgreSQL, while 5,000 sockets got
    # 100 msgs/s); 0.5 ms gave ~13 and ~25 ms, for ~1.6 % more CPU in the fan-out (more loop
    # passes; docs/realtime.md "Fan-out", bench/findings.md #34).
    realtime_flush_slice: int = 100
    realtime_flush_slice_ms: float = 0.5
    # Unsent bytes allowed on one socket before it counts as a slow consumer (≈ thousands of frames).
    realtime_max_buffer: int = 1 << 20
    # Server heartbeat period; the client declares a socket dead after 10 s of silence (2 periods).
    heartbeat_interval_s: float = 5.0
    # Close a socket that sent nothing (not even a heartbeat) for this long.
    client_idle_timeout_s: float = 30.0
    # Upper bound for `/changes?wait=`: below common proxy idle timeouts (30–60 s).
    long_poll_max_wait_s: float = 25.0
    # Largest incoming WebSocket message (bytes) before the socket has a user, and after: the
    # protocol refuses a bigger frame from its header, before reading it (close 1009). Clients
    # only send small control frames (auth, join, leave, heartbeat); messages go over HTTP.
    realtime_max_frame_unauthenticated: int = 4 * 1024
    realtime_max_frame: int = 64 * 1024
    # A socket without a valid token this long after it opened is closed (4401).
    realtime_auth_timeout_s: float = 10.0
    # Topics (joined webinars) per socket; the join beyond gets `too_many_topics`.
    realtime_max_topics: int = 10
    # Open sockets per user in this process; the one beyond is closed after its auth (4429).
    realtime_max_sockets_per_user: int = 20
    # Origins whose pages may open /realtime, besides this server's own (the Origin's host:port
    # equals the Host header) and PUBLIC_URL's; "*" allows any. No Origin (not a browser): allowed.
    realtime_allowed_origins: tuple[str, ...] = ()
    # The bus between server processes: unset (one process, in memory) or redis://host:6379/0.
    bus_url: str = ""
    # Redis channel prefix: processes of one deployment share it; two deployments on one Redis
    # (or parallel test runs) must not (pub/sub ignores the database number).
    bus_channel: str = "webinar-chat"
    # This process's id on the bus (default: host-pid-random, new at every start).
    node_id: str = ""
    # A node that received nothing on the bus for this long probes it (a message to itself) ...
    bus_probe_idle_s: float = 5.0
    # ... and counts it silent (not ready, reconnect) if the probe is not back in this long.
    bus_probe_timeout_s: float = 2.0
    # Every listened-to room's head is re-read this often and caught up from the feed if it is
    # ahead: it covers a wake-up lost while the bus looked healthy. One indexed read per room.
    bus_safety_poll_s: float = 5.0
    # Presence (server/presence.py, docs/webinar-features.md "Presence"): each process publishes
    # its per-webinar counts on the bus this often; another node's count is dropped after three
    # periods without news of it.
    presence_interval_s: float = 5.0
    # At most one presence frame per webinar this often (the count is recomputed as often).
    presence_throttle_s: float = 2.0
    # A long-poller counts as connected this long after their last poll (0: 2 × long_poll_max_wait_s).
    presence_poll_ttl_s: float = 0.0
    log_level: str = "INFO"
    log_json: bool = False
    # The address people open (https://chat.example.com): the pages' CSP allows its realtime
    # origin (wss://…); empty: same-origin connections only ('self').
    public_url: str = ""
    # Who may embed the pages in a frame (CSP frame-ancestors): hosts embed the chat in their
    # webinar page, e.g. "https://webinars.example.com".
    frame_ancestors: str = "'none'"
    # One `http_request` line per HTTP request, long-polls of the fast path included.
    access_log: bool = True
    # Under `serve --workers N`, worker i also serves /metrics on metrics_port + i (0: off).
    metrics_port: int = 0
    # Connections the kernel queues before the server accepts them. At a webinar's start
    # thousands connect within seconds; a full queue drops their SYNs, and each retries after 1,
    # 3, 7 s. The kernel caps it at net.core.somaxconn (docs/operations.md, "Webinar start").
    listen_backlog: int = 65535
    # Monitoring events (POST /api/metrics/events): batches per client session per minute.
    client_events_per_minute: int = 30
    # Rate limits (server/rate_limits.py; docs/operations.md "Rate limits"): "N/SECONDS" is a
    # token bucket of N (the burst) refilled over SECONDS (N/SECONDS per second sustained);
    # "off" disables one. Shared through Redis when bus_url is redis://, else per process.
    # Failed log-ins per (account, client IP): the lock-out a guesser meets first.
    rate_login_account_ip: str = "10/900"
    # Failed log-ins per account from all IPs (a guesser with many addresses), and per client
    # IP over all accounts (one password tried on many accounts).
    rate_login_account: str = "100/3600"
    rate_login_ip: str = "50/900"
    # Sign-ups per client IP.
    rate_signup_ip: str = "20/3600"
    # Message creates per user: attendees (burst 10, 1 per second), moderators and hosts.
    rate_messages: str = "10/10"
    rate_messages_staff: str = "30/10"
    # WebSocket handshakes per client IP, and per user when the token is in the URL.
    rate_ws_connect_ip: str = "300/60"
    rate_ws_connect_user: str = "30/60"
    # Proxies whose X-Forwarded-For names the client (comma-separated addresses or networks;
    # empty: the peer address is the client).
    trusted_proxies: str = ""
    # Tokens from the host platform (auth/external.py, docs/external-auth.md): JWTs signed by
    # someone else, accepted beside our own access tokens. Off while neither a secret nor a JWKS
    # source is set. The secret verifies HS256 tokens (Supabase Auth's legacy "JWT secret");
    # the JWKS (a URL, fetched in the background, or a file) verifies RS256/ES256 ones.
    external_jwt_secret: str = ""
    external_jwt_jwks_url: str = ""
    external_jwt_jwks_file: str = ""
    external_jwt_issuer: str = ""
    external_jwt_audience: str = ""
    # Comma-separated; empty: HS256 with a secret, RS256 and ES256 with a JWKS.
    external_jwt_algorithms: str = ""
    external_jwt_leeway_s: float = 0.0
    # Claim names (dotted paths into nested objects, e.g. app_metadata.role). The name claim may
    # list several, tried in order; then the e-mail's local part, then "User <id prefix>".
    external_jwt_subject_claim: str = "sub"
    external_jwt_name_claim: str = "name"
    external_jwt_email_claim: str = "email"
    # Unset: registrations and roles come from the admin API, as for local users.
    external_jwt_role_claim: str = ""
    external_jwt_webinars_claim: str = ""
    # The JWKS is read again this often, and on a token with an unknown `kid` (key rotation),
    # but at most once per EXTERNAL_JWT_JWKS_MIN_REFETCH_S for unknown kids.
    external_jwt_jwks_refresh_s: float = 300.0
    external_jwt_jwks_min_refetch_s: float = 10.0
    development: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        development = os.environ.get("WEBINAR_CHAT_ENV", "").lower() == "development"
        values: dict[str, Any] = {
            "database_url": os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL,
            "host": os.environ.get("HOST", "127.0.0.1"),
            "port": _env_int("PORT", 8000),
            "jwt_secret": os.environ.get("JWT_SECRET", ""),
            "access_token_ttl_s": _env_int("ACCESS_TOKEN_TTL", 900),
            "refresh_token_ttl_s": _env_int("REFRESH_TOKEN_TTL", 30 * 24 * 3600),
            "max_message_length": _env_int("MAX_MESSAGE_LENGTH", 2000),
            "realtime_tick_ms": _env_int("REALTIME_TICK_MS", 25),
            "realtime_flush_slice": _env_int("REALTIME_FLUSH_SLICE", 100),
            "realtime_flush_slice_ms": _env_float("REALTIME_FLUSH_SLICE_MS", 0.5),
            "realtime_max_buffer": _env_int("REALTIME_MAX_BUFFER", 1 << 20),
            "heartbeat_interval_s": _env_float("HEARTBEAT_INTERVAL", 5.0),
            "client_idle_timeout_s": _env_float("CLIENT_IDLE_TIMEOUT", 30.0),
            "long_poll_max_wait_s": _env_float("LONG_POLL_MAX_WAIT", 25.0),
            "realtime_max_frame_unauthenticated": _env_int("REALTIME_MAX_FRAME_UNAUTHENTICATED",
                                                           4 * 1024),
            "realtime_max_frame": _env_int("REALTIME_MAX_FRAME", 64 * 1024),
            "realtime_auth_timeout_s": _env_float("REALTIME_AUTH_TIMEOUT", 10.0),
            "realtime_max_topics": _env_int("REALTIME_MAX_TOPICS", 10),
            "realtime_max_sockets_per_user": _env_int("REALTIME_MAX_SOCKETS_PER_USER", 20),
            "realtime_allowed_origins": tuple(
                o.strip() for o in os.environ.get("REALTIME_ALLOWED_ORIGINS", "").split(",")
                if o.strip()),
            "bus_url": os.environ.get("BUS_URL", ""),
            "bus_channel": os.environ.get("BUS_CHANNEL") or "webinar-chat",
            "node_id": os.environ.get("NODE_ID", ""),
            "bus_probe_idle_s": _env_float("BUS_PROBE_IDLE", 5.0),
            "bus_probe_timeout_s": _env_float("BUS_PROBE_TIMEOUT", 2.0),
            "bus_safety_poll_s": _env_float("BUS_SAFETY_POLL", 5.0),
            "presence_interval_s": _env_float("PRESENCE_INTERVAL", 5.0),
            "presence_throttle_s": _env_float("PRESENCE_THROTTLE", 2.0),
            "presence_poll_ttl_s": _env_float("PRESENCE_POLL_TTL", 0.0),
            # Debug lines in development only, unless LOG_LEVEL says otherwise.
            "log_level": (os.environ.get("LOG_LEVEL") or ("DEBUG" if development else "INFO")
                          ).upper(),
            "log_json": os.environ.get("LOG_FORMAT", "").lower() == "json",
            "access_log": os.environ.get("ACCESS_LOG", "true").lower() not in ("0", "false",
                                                                               "no", "off"),
            "metrics_port": _env_int("METRICS_PORT", 0),
            "listen_backlog": _env_int("LISTEN_BACKLOG", 65535),
            "public_url": os.environ.get("PUBLIC_URL", "").rstrip("/"),
            "frame_ancestors": os.environ.get("FRAME_ANCESTORS") or "'none'",
            "client_events_per_minute": _env_int("CLIENT_EVENTS_PER_MINUTE", 30),
            "rate_login_account_ip": os.environ.get("RATE_LIMIT_LOGIN_ACCOUNT_IP") or "10/900",
            "rate_login_account": os.environ.get("RATE_LIMIT_LOGIN_ACCOUNT") or "100/3600",
            "rate_login_ip": os.environ.get("RATE_LIMIT_LOGIN_IP") or "50/900",
            "rate_signup_ip": os.environ.get("RATE_LIMIT_SIGNUP_IP") or "20/3600",
            "rate_messages": os.environ.get("RATE_LIMIT_MESSAGES") or "10/10",
            "rate_messages_staff": os.environ.get("RATE_LIMIT_MESSAGES_STAFF") or "30/10",
            "rate_ws_connect_ip": os.environ.get("RATE_LIMIT_WS_CONNECT_IP") or "300/60",
            "rate_ws_connect_user": os.environ.get("RATE_LIMIT_WS_CONNECT_USER") or "30/60",
            "trusted_proxies": os.environ.get("TRUSTED_PROXIES", ""),
            "external_jwt_secret": os.environ.get("EXTERNAL_JWT_SECRET", ""),
            "external_jwt_jwks_url": os.environ.get("EXTERNAL_JWT_JWKS_URL", ""),
            "external_jwt_jwks_file": os.environ.get("EXTERNAL_JWT_JWKS_FILE", ""),
            "external_jwt_issuer": os.environ.get("EXTERNAL_JWT_ISSUER", ""),
            "external_jwt_audience": os.environ.get("EXTERNAL_JWT_AUDIENCE", ""),
            "external_jwt_algorithms": os.environ.get("EXTERNAL_JWT_ALGORITHMS", ""),
            "external_jwt_leeway_s": _env_float("EXTERNAL_JWT_LEEWAY", 0.0),
            "external_jwt_subject_claim": os.environ.get("EXTERNAL_JWT_SUBJECT_CLAIM") or "sub",
            "external_jwt_name_claim": os.environ.get("EXTERNAL_JWT_NAME_CLAIM") or "name",
            "external_jwt_email_claim": os.environ.get("EXTERNAL_JWT_EMAIL_CLAIM") or "email",
            "external_jwt_role_claim": os.environ.get("EXTERNAL_JWT_ROLE_CLAIM", ""),
            "external_jwt_webinars_claim": os.environ.get("EXTERNAL_JWT_WEBINARS_CLAIM", ""),
            "external_jwt_jwks_refresh_s": _env_float("EXTERNAL_JWT_JWKS_REFRESH_S", 300.0),
            "external_jwt_jwks_min_refetch_s": _env_float("EXTERNAL_JWT_JWKS_MIN_REFETCH_S",
                                                          10.0),
            "development": development,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def resolve_jwt_secret(settings: Settings) -> str:
    """The configured secret, or for SQLite a random one kept in a file beside the database so
    that tokens survive restarts of the embedded default."""
    if settings.jwt_secret:
        return settings.jwt_secret
    if not settings.is_sqlite:
        raise RuntimeError("JWT_SECRET must be set when DATABASE_URL is not SQLite")
    from .store.db import sqlite_path

    path = sqlite_path(settings.database_url)
    secret_file = Path(str(path) + ".secret") if path != ":memory:" else None
    if secret_file is None:
        return secrets.token_urlsafe(48)
    if secret_file.exists():
        return secret_file.read_text().strip()
    secret = secrets.token_urlsafe(48)
    secret_file.write_text(secret)
    secret_file.chmod(0o600)
    return secret
