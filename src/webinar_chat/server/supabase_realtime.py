"""`/realtime/v1/websocket` and `/socket/websocket`: Supabase Realtime's protocol (docs/supabase.md).

The same connection as `/realtime` (server/realtime.py: limits, fan-out fast path, access checks,
replays, bans, token expiry) with a `PhoenixSession` (protocol/phoenix.py) in place of our
protocol's session. What differs at the socket: the client heartbeats (`phoenix` topic, every
25 s) and the server answers them; the server sends no heartbeats of its own (a Phoenix client
would not know ours); a socket silent for `SUPABASE_IDLE_TIMEOUT_S` is closed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.websockets import WebSocket

from ..protocol.phoenix import PhoenixSession, phoenix_token, serializer_for
from .realtime import RealtimeConnection, token_verifier

if TYPE_CHECKING:
    from .state import AppState

# Phoenix clients heartbeat every 25 s (supabase-js, realtime-py) and give up on the server
# after two missed replies; the server closes a socket that sent nothing for two and a bit of
# their intervals (Phoenix's own default is 60 s).
SUPABASE_IDLE_TIMEOUT_S = 60.0


class SupabaseConnection(RealtimeConnection):
    def __init__(self, state: AppState, websocket: WebSocket, *,
                 connect_user: int | None = None) -> None:
        super().__init__(state, websocket, connect_user=connect_user)
        params = websocket.query_params
        self.vsn = serializer_for(params.get("vsn"))
        self.apikey = params.get("apikey")
        self.session = PhoenixSession(verify_token=token_verifier(state.tokens), owner=self,
                                      max_topics=state.settings.realtime_max_topics,
                                      vsn=self.vsn, apikey=self.apikey)

    def connect_token(self) -> str | None:
        # The apikey stands where our protocol has `?token=`; a user's token when it is one.
        return self.apikey

    def frame_token(self, text: str) -> str | None:
        # A join's `access_token` or an `access_token` push: a token from the host platform is
        # resolved (and its user provisioned) before the session sees it.
        return phoenix_token(text, self.vsn) if '"access_token"' in text else None

    def internal_error_frames(self) -> list[bytes]:
        """A failed task: every channel errors (clients rejoin), then the socket is closed."""
        assert isinstance(self.session, PhoenixSession)
        frames = []
        for sub in self.session.subscriptions.values():
            channel = sub.encoding
            frames.append(channel.push("phx_error", {}, join_ref=channel.join_ref))
        return frames

    def heartbeat(self, now: float, idle_timeout: float, interval: float) -> None:
        if now - self.last_received > max(idle_timeout, SUPABASE_IDLE_TIMEOUT_S):
            self.close(4000, "heartbeat timeout")


async def supabase_realtime_endpoint(websocket: WebSocket) -> None:
    from .rate_limits import admit_websocket

    state: AppState = websocket.app.state.chat
    admitted = await admit_websocket(state, websocket)
    if admitted is None:
        return
    await SupabaseConnection(state, websocket, connect_user=admitted.connect_user).run()

