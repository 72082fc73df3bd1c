"""canaries; events.shadow_of

A canary compares a candidate checkpoint with the champion on live traffic (app/canaries);
an event may be a shadow answer of a served trace (`shadow_of`), which drift leaves out and
canaries pair with the served event.

Self-contained: only the new table and the events column with its index, so the revision it
follows may change at merge time without touching anything here.

Revision ID: 0006
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# Column types are re-declared here, never imported from app.models: a migration must keep
# meaning what it meant when written.
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")

revision: str = "0006"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SHADOW_INDEX = "ix_events_project_shadow_of"
SHADOW_ONLY = sa.text("shadow_of IS NOT NULL")
RUNNING_ONLY = sa.text("status = 'running'")


def _str_enum(name: str, *values: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, create_constraint=True, length=32)


def upgrade() -> None:
    # A nullable column without a default: SQLite adds it in place (no table rebuild) and
    # PostgreSQL without rewriting the table, however many events it holds.
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("shadow_of", sa.String(length=64), nullable=True))
        batch_op.create_index(
            SHADOW_INDEX,
            ["project_id", "shadow_of"],
            unique=False,
            sqlite_where=SHADOW_ONLY,
            postgresql_where=SHADOW_ONLY,
        )

    op.create_table(
        "canaries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("checkpoint_id", sa.Integer(), nullable=False),
        sa.Column("champion_id", sa.Integer(), nullable=False),
        sa.Column(
            "status",
            _str_enum("canary_status", "running", "promote", "rollback", "stopped"),
            nullable=False,
        ),
        sa.Column("decision", _str_enum("canary_decision", "promote", "rollback"), nullable=True),
        sa.Column("signals", JSON, nullable=False),
        sa.Column("cohorts", JSON, nullable=False),
        sa.Column("comparisons", JSON, nullable=False),
        sa.Column("margin", sa.Double(), nullable=False),
        sa.Column("margins", JSON, nullable=False),
        sa.Column("alpha", sa.Double(), nullable=False),
        sa.Column("max_days", sa.Integer(), nullable=False),
        sa.Column("min_hours", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("evidence", JSON, nullable=True),
        sa.Column("evaluated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_evaluation_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_by", sa.String(length=100), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("rolled_back_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("promoted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("api_key_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["api_key_id"],
            ["api_keys.id"],
            name=op.f("fk_canaries_api_key_id_api_keys"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["champion_id"],
            ["checkpoints.id"],
            name=op.f("fk_canaries_champion_id_checkpoints"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["checkpoint_id"],
            ["checkpoints.id"],
            name=op.f("fk_canaries_checkpoint_id_checkpoints"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["models.id"],
            name=op.f("fk_canaries_model_id_models"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_canaries_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_canaries")),
    )
    with op.batch_alter_table("canaries", schema=None) as batch_op:
        batch_op.create_index("ix_canaries_due", ["status", "next_evaluation_at"], unique=False)
        batch_op.create_index("ix_canaries_model", ["model_id", "id"], unique=False)
        batch_op.create_index("ix_canaries_project", ["project_id", "id"], unique=False)
        batch_op.create_index(
            "uq_canaries_running_model",
            ["model_id"],
            unique=True,
            sqlite_where=RUNNING_ONLY,
            postgresql_where=RUNNING_ONLY,
        )


def downgrade() -> None:
    with op.batch_alter_table("canaries", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_canaries_running_model", sqlite_where=RUNNING_ONLY, postgresql_where=RUNNING_ONLY
        )
        batch_op.drop_index("ix_canaries_project")
        batch_op.drop_index("ix_canaries_model")
        batch_op.drop_index("ix_canaries_due")
    op.drop_table("canaries")

    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index(SHADOW_INDEX, sqlite_where=SHADOW_ONLY, postgresql_where=SHADOW_ONLY)
        batch_op.drop_column("shadow_of")
