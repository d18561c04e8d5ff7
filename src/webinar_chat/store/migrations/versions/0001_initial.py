"""initial schema: tenants, webinars, users, registrations, tokens, messages, change feed

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# 64-bit ids everywhere. On SQLite only `INTEGER PRIMARY KEY` is the (64-bit) rowid, and
# AUTOINCREMENT stops ids of deleted rows being reused — a reused id would hide a new message from a
# reader that already polled `after=<that id>`.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)
Uuid = sa.Uuid().with_variant(sa.String(36), "sqlite")


def _id() -> sa.Column:  # type: ignore[type-arg]
    return sa.Column("id", BigId, sa.Identity(), primary_key=True)


def upgrade() -> None:
    op.create_table(
        "agencies",
        _id(),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "clients",
        _id(),
        sa.Column("agency_id", BigId, sa.ForeignKey("agencies.id"), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "webinars",
        _id(),
        sa.Column("agency_id", BigId, sa.ForeignKey("agencies.id"), nullable=False),
        sa.Column("client_id", BigId, sa.ForeignKey("clients.id"), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("chat_open", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("slow_mode_seconds", sa.Integer(), nullable=False, server_default="0"),
        # Head of this webinar's change feed. Writers increment it first thing in their
        # transaction: that row lock is what orders the feed by commit (docs/delivery.md).
        sa.Column("last_seq", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("created_at", Timestamp, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "users",
        _id(),
        sa.Column("email", sa.Text(), nullable=False, unique=True),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("is_admin", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("created_at", Timestamp, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "profiles",
        sa.Column("user_id", BigId, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("display_name", sa.Text(), nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
    )
    op.create_table(
        "registrations",
        sa.Column("webinar_id", BigId, sa.ForeignKey("webinars.id"), primary_key=True),
        sa.Column("user_id", BigId, sa.ForeignKey("users.id"), primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("banned", sa.Boolean(), nullable=False, server_default=sa.false()),
        # Slow mode: checked and set under the webinar lock, so two quick sends cannot both pass.
        sa.Column("last_posted_at", Timestamp, nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.CheckConstraint("role IN ('attendee', 'moderator', 'host')", name="registrations_role"),
    )
    op.create_index("registrations_user", "registrations", ["user_id"])
    op.create_table(
        "refresh_tokens",
        # sha256 of the opaque token: a database leak does not hand out sessions.
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("user_id", BigId, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        # All tokens descending from one log-in; re-use of a rotated token revokes the family.
        sa.Column("family_id", sa.String(36), nullable=False),
        sa.Column("expires_at", Timestamp, nullable=False),
        sa.Column("rotated_at", Timestamp, nullable=True),
        sa.Column("revoked_at", Timestamp, nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
    )
    op.create_index("refresh_tokens_family", "refresh_tokens", ["family_id"])
    op.create_table(
        "messages",
        _id(),
        sa.Column("agency_id", BigId, sa.ForeignKey("agencies.id"), nullable=False),
        sa.Column("client_id", BigId, sa.ForeignKey("clients.id"), nullable=False),
        sa.Column("webinar_id", BigId, sa.ForeignKey("webinars.id"), nullable=False),
        sa.Column("user_id", BigId, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("hidden", sa.Boolean(), nullable=False, server_default=sa.false()),
        # NULL for rows written by clients that predate idempotent sends.
        sa.Column("client_msg_id", Uuid, nullable=True),
        # The change-feed seq that produced this row's current state.
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint(
            "webinar_id", "user_id", "client_msg_id", name="messages_webinar_user_client_msg_id"
        ),
        sqlite_autoincrement=True,
    )
    op.create_index("messages_client_msg_id", "messages", ["client_msg_id"])
    op.create_index("messages_webinar_id_id", "messages", ["webinar_id", "id"])
    op.create_table(
        "message_changes",
        sa.Column("webinar_id", BigId, sa.ForeignKey("webinars.id"), primary_key=True),
        sa.Column("seq", sa.BigInteger(), primary_key=True),
        # No foreign key: a DELETE change outlives its message.
        sa.Column("message_id", sa.BigInteger(), nullable=False),
        sa.Column("op", sa.String(6), nullable=False),
        sa.Column("changed_at", Timestamp, nullable=False),
        sa.CheckConstraint("op IN ('INSERT', 'UPDATE', 'DELETE')", name="message_changes_op"),
    )


def downgrade() -> None:
    for table in (
        "message_changes",
        "messages",
        "refresh_tokens",
        "registrations",
        "profiles",
        "users",
        "webinars",
        "clients",
        "agencies",
    ):
        op.drop_table(table)
