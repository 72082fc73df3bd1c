"""event_cohorts: each project's distinct event cohorts, interned; events.cohort_id

Ingest interns every event's cohort JSON into `event_cohorts` (one row per distinct cohort
of a project, keyed by the SHA-256 of its canonical JSON) and stores the row's id on the
event, so the daily drift scan groups a day's events by an integer instead of by their JSON
(app/drift/rollup.py; docs/scale-out.md).

Events stored before this revision keep a NULL `cohort_id`; drift groups those by their JSON
as before, so nothing is backfilled: the new column is nullable without a default, which
SQLite adds in place and PostgreSQL adds to the partitioned `events` and every day partition
without rewriting a row, however many it holds. A partial index on `(project_id, ts) WHERE
cohort_id IS NULL` tells the drift job whether a day holds such events (building it reads
the stored events once; interned events never enter it, so it costs ingest nothing and
empties as retention drops the old days).

Downgrade drops the column and the table.

Revision ID: 0010
Revises: 0009
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# Column types are re-declared here, never imported from app.models: a migration must keep
# meaning what it meant when written.
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
BIGINT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

LEGACY_INDEX = "ix_events_project_ts_without_cohort"
WITHOUT_COHORT = sa.text("cohort_id IS NULL")

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    # PostgreSQL's key carries the distribution column (Citus), as on every tenant table;
    # SQLite keeps `id` alone, its auto-increment key.
    key = ("project_id", "id") if postgres else ("id",)
    op.create_table(
        "event_cohorts",
        sa.Column("id", BIGINT_ID, autoincrement=True, nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("cohort", JSON, nullable=False),
        sa.Column("route", sa.String(length=200), nullable=True),
        sa.Column("prompt_version", sa.String(length=100), nullable=True),
        sa.Column("user_segment", sa.String(length=100), nullable=True),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_event_cohorts_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(*key, name=op.f("pk_event_cohorts")),
        sa.UniqueConstraint(
            "project_id", "digest", name=op.f("uq_event_cohorts_project_id_digest")
        ),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cohort_id", sa.BigInteger(), nullable=True))
        batch_op.create_index(
            LEGACY_INDEX,
            ["project_id", "ts"],
            unique=False,
            sqlite_where=WITHOUT_COHORT,
            postgresql_where=WITHOUT_COHORT,
        )


def downgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index(LEGACY_INDEX)
        batch_op.drop_column("cohort_id")
    op.drop_table("event_cohorts")
