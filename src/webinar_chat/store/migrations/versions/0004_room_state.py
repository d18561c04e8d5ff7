"""Room state in the change feed: chat mode, pinned announcement, staff-only messages, timeouts

- `webinars.chat_mode` (everyone / hosts_only / read_only) replaces the open/closed switch.
  `chat_open` stays and is written with it (false exactly when read_only), so a process of the
  previous release still refuses attendees' posts in a read-only chat during a rolling deploy.
- `webinars.pinned_*`: the one pinned announcement of a webinar, or none.
- `messages.visibility`: `staff` for an attendee's message posted in hosts_only mode — seen by
  staff and by its author only (docs/webinar-features.md).
- `message_changes.kind`: what a feed entry changed — a message (`message_id` is its id) or the
  room's state (`room`, `message_id` 0). Readers of the previous release ignore nothing; they
  only run against feeds without room entries (the migration adds none).
- `registrations.banned_until`: a timeout ends by itself; NULL with `banned` is permanent.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

Timestamp = sa.DateTime(timezone=True)
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("webinars") as batch:
        batch.add_column(sa.Column("chat_mode", sa.String(16), nullable=False,
                                   server_default="everyone"))
        batch.add_column(sa.Column("pinned_content", sa.Text(), nullable=True))
        batch.add_column(sa.Column("pinned_at", Timestamp, nullable=True))
        batch.add_column(sa.Column("pinned_by", BigId, nullable=True))
    op.execute("UPDATE webinars SET chat_mode = 'read_only' WHERE chat_open = FALSE")
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("visibility", sa.String(8), nullable=False,
                                   server_default="everyone"))
    with op.batch_alter_table("message_changes") as batch:
        batch.add_column(sa.Column("kind", sa.String(8), nullable=False,
                                   server_default="message"))
    with op.batch_alter_table("registrations") as batch:
        batch.add_column(sa.Column("banned_until", Timestamp, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("registrations") as batch:
        batch.drop_column("banned_until")
    op.execute("DELETE FROM message_changes WHERE kind <> 'message'")
    with op.batch_alter_table("message_changes") as batch:
        batch.drop_column("kind")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("visibility")
    op.execute("UPDATE webinars SET chat_open = (chat_mode <> 'read_only')")
    with op.batch_alter_table("webinars") as batch:
        for column in ("pinned_by", "pinned_at", "pinned_content", "chat_mode"):
            batch.drop_column(column)
