"""What happens on this node when the bus says that what someone may see in a webinar changed
(a ban or unban, a registration or role change, the webinar's chat settings): every node, the one
that made the change included, runs `access_changed` (docs/delivery.md, "Several processes").

- Cached read decisions for the webinar (and user) are dropped: the next read checks fresh.
- For one user: each of their live subscriptions to the webinar on this node is re-checked against
  the database; one that may no longer read gets an `error` event and is unsubscribed, one whose
  role changed gets the new audience (redaction) from the next frame on. Their parked long-polls
  are handed to the slow path, which checks fresh (403 for a ban), and the room's waiting slow
  long-polls are woken to re-check.
- For the whole webinar (settings): only the caches; read access does not depend on the settings,
  and re-checking thousands of subscriptions for a slow-mode change would be a query storm.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .state import AppState


def access_changed(state: AppState, webinar_id: int, user_id: int | None) -> None:
    state.access.invalidate(webinar_id, user_id)
    if user_id is None:
        return
    for connection in list(state.connections):
        if connection.user_id == user_id and webinar_id in connection.session.subscriptions:
            connection.recheck_access(webinar_id)
    room = state.hub.rooms.get(webinar_id)
    if room is not None:
        room.parked.recheck(user_id)
        if room.changed is not None and not room.changed.done():
            room.changed.set_result(None)  # slow-path waiters re-check after their wait
        room.changed = None
