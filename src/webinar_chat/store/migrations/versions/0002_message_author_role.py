"""messages.author_role: the author's role in the webinar when they posted (the role badge)

Stored with the message rather than looked up when read, so that every path shows the same badge
forever (docs/delivery.md). Messages written before this migration get their author's current
registration role, or "attendee".

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("author_role", sa.Text(), nullable=False,
                                   server_default="attendee"))
    op.execute("""UPDATE messages SET author_role = (
                      SELECT r.role FROM registrations r
                      WHERE r.webinar_id = messages.webinar_id AND r.user_id = messages.user_id)
                  WHERE EXISTS (SELECT 1 FROM registrations r
                                WHERE r.webinar_id = messages.webinar_id
                                  AND r.user_id = messages.user_id)""")


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("author_role")
