"""The Python SDK of webinar-chat (SPEC §6). Start with `ChatClient`; guide in docs/sdk.md."""

from .client import ChatClient, ClientStats, realtime_url_for
from .config import ClientConfig
from .conversation import Conversation
from .errors import (
    ApiError,
    AuthenticationError,
    Banned,
    ChatError,
    ClientClosed,
    JoinError,
    ProtocolError,
    SendGaveUp,
    SendRejected,
    TransientError,
)
from .feed import ChangeEvent, ChangeType, ChatMessage, Question, RoomState, SeqTracker
from .policy import ConnectionStatus, LinkState, backoff_delay, poll_retry_delay
from .questions import QuestionBoard
from .realtime import ConnectFn, RealtimeSocket, websocket_connector
from .room import Room

__all__ = [
    "ApiError", "AuthenticationError", "Banned", "ChangeEvent", "ChangeType", "ChatClient", "ChatError",
    "ChatMessage", "ClientClosed", "ClientConfig", "ClientStats", "ConnectFn", "ConnectionStatus",
    "Conversation", "JoinError", "LinkState", "ProtocolError", "Question", "QuestionBoard",
    "RealtimeSocket", "Room", "RoomState",
    "SendGaveUp", "SendRejected", "SeqTracker", "TransientError", "backoff_delay",
    "poll_retry_delay", "realtime_url_for", "websocket_connector",
]
