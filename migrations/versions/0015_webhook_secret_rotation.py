"""webhook endpoints: the secret a rotation replaced, and until when it still signs

`POST /api/v1/webhooks/{id}/rotate-secret` moves the current secret to
`previous_secret_encrypted` (Fernet, like `secret_encrypted`) and sets
`previous_secret_expires_at` to the end of the grace period; until then every delivery carries
a signature by each secret, so a receiver can switch secrets without rejecting a message. Both
or neither (CHECK `previous_secret_pair`). Existing endpoints have never rotated: both NULL.
SQLite copies the table once for the CHECK (batch mode); PostgreSQL adds the nullable columns
in place and validates the CHECK over the existing rows.

Downgrade drops both columns: deliveries are signed by the current secret alone again.

Revision ID: 0015
Revises: 0014
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PREVIOUS_SECRET_PAIR = "(previous_secret_encrypted IS NULL) = (previous_secret_expires_at IS NULL)"


def upgrade() -> None:
    with op.batch_alter_table("webhook_endpoints", schema=None) as batch_op:
        batch_op.add_column(sa.Column("previous_secret_encrypted", sa.Text(), nullable=True))
        batch_op.add_column(
            sa.Column("previous_secret_expires_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.create_check_constraint(
            op.f("ck_webhook_endpoints_previous_secret_pair"), PREVIOUS_SECRET_PAIR
        )


def downgrade() -> None:
    with op.batch_alter_table("webhook_endpoints", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_webhook_endpoints_previous_secret_pair"), type_="check")
        batch_op.drop_column("previous_secret_expires_at")
        batch_op.drop_column("previous_secret_encrypted")
