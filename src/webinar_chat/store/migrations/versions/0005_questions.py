"""Q&A: questions and their votes, in the webinar's change feed

- `questions`: an attendee's question, separate from the chat. 64-bit ids like messages (on
  SQLite the rowid, with AUTOINCREMENT so an id is never reused). `status` is open, answered or
  dismissed; `votes` the number of rows in `question_votes`, kept with the row under the
  webinar's feed lock; `seq` the feed seq of its current state; `author_role` the asker's role
  when they asked (the badge, as for messages). Idempotent asks: UNIQUE (webinar_id, user_id,
  client_msg_id).
- `question_votes`: one row per (question, user) who upvoted it.
- Feed entries of kind `question` in `message_changes` (`message_id` is the question's id),
  read back with the question's current state (docs/webinar-features.md, "Q&A").

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)
Uuid = sa.Uuid().with_variant(sa.String(36), "sqlite")


def upgrade() -> None:
    op.create_table(
        "questions",
        sa.Column("id", BigId, sa.Identity(), primary_key=True),
        sa.Column("agency_id", BigId, sa.ForeignKey("agencies.id"), nullable=False),
        sa.Column("client_id", BigId, sa.ForeignKey("clients.id"), nullable=False),
        sa.Column("webinar_id", BigId, sa.ForeignKey("webinars.id"), nullable=False),
        sa.Column("user_id", BigId, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("status", sa.String(10), nullable=False, server_default="open"),
        sa.Column("votes", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("client_msg_id", Uuid, nullable=True),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("author_role", sa.String(16), nullable=False, server_default="attendee"),
        sa.CheckConstraint("status IN ('open', 'answered', 'dismissed')",
                           name="questions_status"),
        sa.UniqueConstraint("webinar_id", "user_id", "client_msg_id",
                            name="questions_webinar_user_client_msg_id"),
        sqlite_autoincrement=True,
    )
    op.create_index("questions_webinar_id_id", "questions", ["webinar_id", "id"])
    op.create_table(
        "question_votes",
        sa.Column("question_id", BigId, sa.ForeignKey("questions.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("user_id", BigId, sa.ForeignKey("users.id"), primary_key=True),
        sa.Column("created_at", Timestamp, nullable=False),
    )
    op.create_index("question_votes_user", "question_votes", ["user_id"])


def downgrade() -> None:
    op.execute("DELETE FROM message_changes WHERE kind = 'question'")
    op.drop_index("question_votes_user", table_name="question_votes")
    op.drop_table("question_votes")
    op.drop_index("questions_webinar_id_id", table_name="questions")
    op.drop_table("questions")
