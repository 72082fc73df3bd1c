"""one monitor per (model, signal, cohort)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 02:30:00.000000

Default monitors are created lazily by whichever process first needs them; without a unique
key two processes could both create them. NULL dimension / value mean "any", and NULLs never
collide in a unique index, so the index is over coalesce(column, '') ('' is never a valid
dimension or value: the API requires at least one character).

SQLite cannot reflect expression indexes: a later batch migration that rebuilds `monitors` on
SQLite must re-create this index itself (autogenerate does not see it there either).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "uq_monitors_model_signal_cohort"
SAME_KEY = (
    "m2.model_id = m1.model_id AND m2.signal = m1.signal"
    " AND coalesce(m2.dimension, '') = coalesce(m1.dimension, '')"
    " AND coalesce(m2.value, '') = coalesce(m1.value, '')"
)


def upgrade() -> None:
    # Duplicates already created by the race: keep the newest of each key (the one the drift
    # job judged with: the most specific monitor with the highest id wins), moving any alert of
    # the others onto it, then drop the others.
    op.execute(
        "UPDATE alerts SET monitor_id = (SELECT MAX(m2.id) FROM monitors m1 JOIN monitors m2 "
        f"ON {SAME_KEY} WHERE m1.id = alerts.monitor_id)"
    )
    op.execute(
        f"DELETE FROM monitors WHERE EXISTS (SELECT 1 FROM monitors m2, monitors m1 "
        f"WHERE m1.id = monitors.id AND {SAME_KEY} AND m2.id > m1.id)"
    )
    with op.batch_alter_table("monitors", schema=None) as batch_op:
        batch_op.create_index(
            INDEX,
            [
                "model_id",
                "signal",
                sa.text("coalesce(dimension, '')"),
                sa.text("coalesce(value, '')"),
            ],
            unique=True,
        )


def downgrade() -> None:
    with op.batch_alter_table("monitors", schema=None) as batch_op:
        batch_op.drop_index(INDEX)
