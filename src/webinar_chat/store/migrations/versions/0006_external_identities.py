"""Users from the host platform: the link from an external token's (issuer, subject) to a user

- `external_identities`: one row per (issuer, subject) of a token verified by the external JWT
  configuration (docs/external-auth.md); the primary key makes provisioning idempotent across
  processes: a second process that provisions the same subject at the same moment fails on it,
  rolls its new user back and reads the winner's row. `issuer` is EXTERNAL_JWT_ISSUER, else the
  token's `iss`, else "". A user has at most one identity per issuer (index on user_id).
- Provisioned users have no password (an `password_hash` that no password verifies against) and,
  when the token carries no usable e-mail, an address under `external.invalid` (RFC 6761).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-09
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "external_identities",
        sa.Column("issuer", sa.Text(), primary_key=True),
        sa.Column("subject", sa.Text(), primary_key=True),
        sa.Column("user_id", BigId, sa.ForeignKey("users.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
    )
    op.create_index("external_identities_user", "external_identities", ["user_id"])


def downgrade() -> None:
    op.drop_index("external_identities_user", table_name="external_identities")
    op.drop_table("external_identities")
