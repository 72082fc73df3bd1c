"""canaries: an optional scope, the one cohort the candidate serves

A canary routed to one segment first (internal users, a tier, a route) compared the
candidate's events, all from that segment, with the champion's from every segment, so the
segment's base rate read as the candidate's quality. `scope` ({dimension, value}) restricts
every comparison, on both arms, to that cohort (app/canaries/queries.py).

A nullable column: existing canaries keep comparing the whole population (NULL). Downgrade
drops it; a scoped canary then reads as unscoped (its stored evidence keeps the scope).

Revision ID: 0021
Revises: 0020
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# Column types are re-declared here, never imported from app.models.
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("canaries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("scope", JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("canaries", schema=None) as batch_op:
        batch_op.drop_column("scope")
