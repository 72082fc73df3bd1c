"""drift: cohorts added to a frozen reference after it froze

A cohort that first serves after the model's reference froze (a new route, a new value of
a dimension) has no entry in it and used to go unjudged until a rebaseline or a champion
change, which restart every CUSUM. The daily job now adds its entries to the active
reference once it has its own window of known-good days (app/drift/references.py), without
a new version; `drift_reference_cohorts` records, per reference version, which cohorts
were added, on which day, and from which days, for audit and for the API and the page.

A new table only: existing rows need no backfill. Downgrade drops it; the entries it
describes stay in their references' `stats` (the revision before this one judges them like
any other entry, and only loses the record of where they came from).

Revision ID: 0013
Revises: 0012
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# Column types are re-declared here, never imported from app.models.
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "drift_reference_cohorts",
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("dimension", sa.String(length=100), nullable=False),
        sa.Column("value", sa.String(length=200), nullable=False),
        sa.Column("added_on", sa.Date(), nullable=False),
        sa.Column("first_day", sa.Date(), nullable=False),
        sa.Column("last_day", sa.Date(), nullable=False),
        sa.Column("days", JSON, nullable=False),
        sa.Column("entries", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id", "model_id", "version"],
            [
                "drift_references.project_id",
                "drift_references.model_id",
                "drift_references.version",
            ],
            name=op.f("fk_drift_reference_cohorts_project_id_drift_references"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "project_id",
            "model_id",
            "version",
            "dimension",
            "value",
            name=op.f("pk_drift_reference_cohorts"),
        ),
    )


def downgrade() -> None:
    op.drop_table("drift_reference_cohorts")
