"""realtime-py 2.34.1, unmodified, subscribed the way the seed's page did (docs/supabase.md):
`channel('webinar:N:messages').on_postgres_changes('*', public.messages, 'webinar_id=eq.N')`.
Runs in its own virtualenv (.venv-clients: realtime-py pins websockets < 16) and reports every
status, system push and change on stdout, one JSON object per line, until it is killed.

Usage: seed_subscriber.py BASE_URL TOKEN WEBINAR_ID
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from realtime import AsyncRealtimeClient


def out(**fields: Any) -> None:
    print(json.dumps(fields, default=str), flush=True)


async def main() -> None:
    base, token, webinar = sys.argv[1], sys.argv[2], int(sys.argv[3])
    # The token is the apikey too: realtime-py sends it in the URL and in every join.
    client = AsyncRealtimeClient(f"{base}/realtime/v1", token=token, auto_reconnect=True,
                                 initial_backoff=0.5)
    await client.connect()
    channel = client.channel(f"webinar:{webinar}:messages")
    channel.on_postgres_changes("*", schema="public", table="messages",
                                filter=f"webinar_id=eq.{webinar}",
                                callback=lambda payload: out(kind="change", payload=payload))
    channel.on_system(lambda payload: out(kind="system", payload=payload))
    await channel.subscribe(lambda state, error: out(kind="status", state=str(state.value),
                                                     error=str(error) if error else None))
    await asyncio.Event().wait()


asyncio.run(main())
