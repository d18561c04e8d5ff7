"""message_changes_deletes: a webinar's DELETE changes by message id (the transcript export)

A deleted message leaves only its DELETE change (store.delete_message removes the row). The
export (Store.transcript_pages) merges those into its walk of `messages` by id, a page at a time;
without this index each page would scan every change of the webinar (the primary key is
(webinar_id, seq)), quadratic in the webinar's size. Partial: INSERT and UPDATE changes, nearly
all of them, are never written to it, so sends pay nothing for it.

PostgreSQL builds it CONCURRENTLY: `migrate` runs while the old version serves
(docs/deployment.md), and a plain CREATE INDEX would block every send for the whole build. A
build that fails leaves an INVALID index behind: drop it (`DROP INDEX message_changes_deletes`)
and migrate again.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_NAME = "message_changes_deletes"
_DELETES = sa.text("op = 'DELETE'")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        with op.get_context().autocommit_block():  # CONCURRENTLY cannot run in a transaction
            op.create_index(_NAME, "message_changes", ["webinar_id", "message_id"],
                            postgresql_where=_DELETES, postgresql_concurrently=True)
    else:
        op.create_index(_NAME, "message_changes", ["webinar_id", "message_id"],
                        sqlite_where=_DELETES)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        with op.get_context().autocommit_block():
            op.drop_index(_NAME, "message_changes", postgresql_concurrently=True)
    else:
        op.drop_index(_NAME, "message_changes")
