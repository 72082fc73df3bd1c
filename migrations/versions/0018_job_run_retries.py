"""job runs: how many attempts a period's claim has had, and when a failed one is retried

`attempts` counts the runs of the period (1 for the claim that first ran it; existing rows
ran once) and `retry_at` is when a failed period may be claimed again (NULL: not to be
retried, which every existing row is: a period that failed before this revision stays failed
as it was). The scheduler's retry ticks take a failed drift period whose `retry_at` has
passed (app/core/jobs.claim_period), a few times with growing waits (app/drift/job.py).

Downgrade drops both columns: a failed period stays failed for good again.

Revision ID: 0018
Revises: 0017
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("job_runs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("attempts", sa.Integer(), server_default=sa.text("1"), nullable=False)
        )
        batch_op.add_column(sa.Column("retry_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("job_runs", schema=None) as batch_op:
        batch_op.drop_column("retry_at")
        batch_op.drop_column("attempts")
