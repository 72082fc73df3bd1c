"""champion history: the alerts that stood open on the checkpoint a change replaced

Fixing forward (A, then B regressing, then a fix C promoted instead of a rollback) left B the
way back from C: only a rollback marked a checkpoint as replaced for cause. A change of
champion now records the alerts about the replaced checkpoint still unresolved at that
moment, and such a checkpoint is no rollback target until promoted again
(app/registry/service.rollback_target_id).

Upgrade backfills every existing change from the alerts' own times: an alert about the
replaced checkpoint opened before the change and not resolved by then. "About" is the
alert's checkpoint now: an alert that stood on the replaced checkpoint and later moved to its
successor (docs/statistics.md §8.5) is not found, where a change made now records it.
Downgrade drops the column; targets then follow rollbacks alone again.

Revision ID: 0022
Revises: 0021
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# Column types are re-declared here, never imported from app.models.
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("champion_history", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "previous_open_alert_ids", JSON, nullable=False, server_default=sa.text("'[]'")
            )
        )
    bind = op.get_bind()
    changes = bind.execute(
        sa.text(
            "SELECT h.project_id, h.id, a.id FROM champion_history h JOIN alerts a"
            " ON a.project_id = h.project_id AND a.model_id = h.model_id"
            " AND a.checkpoint_id = h.previous_checkpoint_id"
            " WHERE a.opened_at < h.created_at"
            " AND (a.resolved_at IS NULL OR a.resolved_at > h.created_at)"
            " ORDER BY h.id, a.id"
        )
    ).all()
    open_ids: dict[tuple[int, int], list[int]] = {}
    for project_id, history_id, alert_id in changes:
        open_ids.setdefault((project_id, history_id), []).append(alert_id)
    history = sa.table(
        "champion_history",
        sa.column("project_id", sa.Integer),
        sa.column("id", sa.Integer),
        sa.column("previous_open_alert_ids", JSON),
    )
    for (project_id, history_id), alert_ids in open_ids.items():
        bind.execute(
            history.update()
            .where(history.c.project_id == project_id, history.c.id == history_id)
            .values(previous_open_alert_ids=alert_ids)
        )


def downgrade() -> None:
    with op.batch_alter_table("champion_history", schema=None) as batch_op:
        batch_op.drop_column("previous_open_alert_ids")
