"""The latest history page of a webinar, encoded once and shared (GET
/api/webinars/{id}/messages without `after`/`before`: what every client loads when it opens the
chat). At a webinar's start thousands of attendees ask for it within seconds; each one read 100
rows on the database's one reader thread and encoded them, half of a fresh join's cost.

A page is kept on the webinar's room (`Room.history_pages`), keyed by audience and limit, and
served while all of these hold:
- the room has released every change up to the page's head (`last_seq`) and nothing after it:
  any change (a new message, a hide, a delete, an edit) seals a batch, which empties the cache;
- it is younger than MAX_AGE_S (a renamed author's display name comes from the profile, which no
  change announces);
- for attendees: the reader wrote none of the staff-only messages from the page's oldest message
  on (`authors`): those readers see their own, so their page is their own (read from the
  database). Staff see every message, so their page is the same for all of them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..protocol.events import Audience

MAX_AGE_S = 2.0


@dataclass(frozen=True, slots=True)
class HistoryPage:
    body: bytes  # the whole JSON answer
    last_seq: int  # the head of the feed the page was read with
    made_at: float  # time.monotonic()
    # Attendees who wrote a staff-only message from the page's oldest message on.
    authors: frozenset[int]


Key = tuple[Audience, int]  # (audience, limit)


def cached_page(pages: dict[Key, HistoryPage], released_seq: int, audience: Audience, limit: int,
                viewer_id: int, now: float | None = None) -> bytes | None:
    """The shared answer for this reader, or None (then read the database)."""
    page = pages.get((audience, limit))
    if page is None or page.last_seq != released_seq:
        return None
    if (now if now is not None else time.monotonic()) - page.made_at > MAX_AGE_S:
        return None
    if audience is Audience.ATTENDEE and viewer_id in page.authors:
        return None
    return page.body


def keep_page(pages: dict[Key, HistoryPage], released_seq: int, audience: Audience, limit: int,
              page: HistoryPage) -> None:
    """Keep a page just read, if the room has released exactly what it was read with."""
    if page.last_seq == released_seq:
        pages[(audience, limit)] = page
