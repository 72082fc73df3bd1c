"""drift: frozen references, daily judgements, alert evidence, event token counts

The daily drift job judges each model-day against a frozen reference of the champion's
known-good days (`drift_references`), keeps its per cohort x signal verdicts and CUSUM
state (`drift_judgements`), and records why an alert opened (`alerts.evidence`). Events
carry nullable token counts for the token signals.

The new tables have no surrogate id: their primary keys start with project_id, so they can
be distributed by project. Everything added is nullable or new, so existing rows need no
backfill and the downgrade only drops what the upgrade added.

Revision ID: 0007
Revises: 0006
"""

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# Column types are re-declared here, never imported from app.models.
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable columns without defaults: added in place on both databases, whatever the size.
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("input_tokens", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("output_tokens", sa.Integer(), nullable=True))
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("evidence", JSON, nullable=True))

    op.create_table(
        "drift_references",
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("checkpoint_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("trigger", sa.String(length=32), nullable=False),
        sa.Column("first_day", sa.Date(), nullable=False),
        sa.Column("last_day", sa.Date(), nullable=False),
        sa.Column("days", JSON, nullable=False),
        sa.Column("stats", JSON, nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("actor", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["checkpoint_id"],
            ["checkpoints.id"],
            name=op.f("fk_drift_references_checkpoint_id_checkpoints"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["models.id"],
            name=op.f("fk_drift_references_model_id_models"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_drift_references_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "project_id", "model_id", "version", name=op.f("pk_drift_references")
        ),
    )
    op.create_index(
        "ix_drift_references_project_status",
        "drift_references",
        ["project_id", "status"],
        unique=False,
    )

    op.create_table(
        "drift_judgements",
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("signal", sa.String(length=32), nullable=False),
        sa.Column("dimension", sa.String(length=100), nullable=False),
        sa.Column("value", sa.String(length=200), nullable=False),
        sa.Column("checkpoint_id", sa.Integer(), nullable=False),
        sa.Column("reference_version", sa.Integer(), nullable=True),
        sa.Column("side", sa.String(length=16), nullable=False),
        sa.Column("observed", sa.Double(), nullable=True),
        sa.Column("volume", sa.Integer(), nullable=False),
        sa.Column("center", sa.Double(), nullable=True),
        sa.Column("band_low", sa.Double(), nullable=True),
        sa.Column("band_high", sa.Double(), nullable=True),
        sa.Column("band_alpha", sa.Double(), nullable=False),
        sa.Column("pvalue", sa.Double(), nullable=True),
        sa.Column("score", sa.Double(), nullable=True),
        sa.Column("cusum", sa.Double(), nullable=False),
        sa.Column("cusum_lower", sa.Double(), nullable=False),
        sa.Column("cusum_h", sa.Double(), nullable=True),
        sa.Column("rules", sa.SmallInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["checkpoint_id"],
            ["checkpoints.id"],
            name=op.f("fk_drift_judgements_checkpoint_id_checkpoints"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["models.id"],
            name=op.f("fk_drift_judgements_model_id_models"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_drift_judgements_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "project_id",
            "model_id",
            "day",
            "signal",
            "dimension",
            "value",
            name=op.f("pk_drift_judgements"),
        ),
    )
    _set_defaults(NEW_DEFAULT_BAND, 1, 3)


# The default monitors' settings before and after: the trailing-window band becomes the
# frozen-reference band (judged in the signal's harmful direction), with no volume floor and
# three in-control days to resolve.
OLD_DEFAULT_BAND = {
    "type": "baseline",
    "window_days": 14,
    "alpha": 0.001,
    "min_days": 3,
    "source": "champion",
}
NEW_DEFAULT_BAND = {"type": "baseline", "side": "upper"}


def _set_defaults(band: dict[str, object], min_volume: int, resolve_after_days: int) -> None:
    """The default monitors' band and settings (the band as JSON text, cast on PostgreSQL)."""
    value = "CAST(:band AS jsonb)" if op.get_bind().dialect.name == "postgresql" else ":band"
    op.get_bind().execute(
        sa.text(
            f"UPDATE monitors SET band = {value}, min_volume = :min_volume, "
            "resolve_after_days = :resolve_after_days WHERE is_default"
        ),
        {
            "band": json.dumps(band),
            "min_volume": min_volume,
            "resolve_after_days": resolve_after_days,
        },
    )


def downgrade() -> None:
    _set_defaults(OLD_DEFAULT_BAND, 100, 2)
    op.drop_table("drift_judgements")
    op.drop_index("ix_drift_references_project_status", table_name="drift_references")
    op.drop_table("drift_references")
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.drop_column("evidence")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_column("output_tokens")
        batch_op.drop_column("input_tokens")
