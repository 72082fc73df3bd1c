"""webhook deliveries: the subject an event is about, so one subject's events go out in order

`webhook_deliveries.subject` (nullable, e.g. "alert:12", "gate:4", "model:3", "canary:7")
names the resource the event is about. The sender does not claim a delivery while an earlier
(lower id) delivery of the same subject to the same endpoint is still pending, so a retried
`alert.opened` is never overtaken by its `alert.resolved`. The index on
(endpoint_id, subject, id) serves that check.

Rows already queued keep subject NULL: they are sent as before, unordered (their subject
would have to be guessed from the msg_id and payload). Adding a nullable column rewrites no
row on PostgreSQL or SQLite.

Downgrade drops the index and the column (the sender then goes back to unordered sends).

Revision ID: 0014
Revises: 0013
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("subject", sa.String(length=64), nullable=True))
        batch_op.create_index(
            "ix_webhook_deliveries_subject", ["endpoint_id", "subject", "id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_webhook_deliveries_subject")
        batch_op.drop_column("subject")
