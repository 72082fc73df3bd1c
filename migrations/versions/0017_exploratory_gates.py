"""gates: exploratory gates (the request overrode the stored policy) spend no attempt

A boolean `exploratory` on `gates`, and the unique (checkpoint, dataset version, attempt)
key narrowed to real gates (a partial unique index, `WHERE NOT exploratory`, on SQLite and
PostgreSQL alike): exploratory gates carry the attempt number of the next real gate, which
any number of them may share, while two real gates decided at once still cannot both be
"attempt 2".

Backfill: a gate is exploratory when its stored `notes["policy_overrides"]` is not empty or,
for a gate decided before overrides were stored, when one of its `notes["messages"]` says
"policy overridden in the request" (the rule of app.registry.queries.request_overrides,
frozen here). Stored attempt numbers and alphas stay as decided: they are the budgets those
gates spent (a real gate numbered after an exploratory one keeps its higher number; the
next real gate is numbered after the highest real one).

Downgrade drops the index and the column and renumbers every gate of a checkpoint on a
version in id order, as the rule before this revision counted them (every gate an attempt),
so that the full unique key holds again; `alpha` keeps the budget each gate was decided at.

Revision ID: 0017
Revises: 0016
"""

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
REAL_GATES = sa.text("NOT exploratory")
ATTEMPT_KEY = ["checkpoint_id", "dataset_version_id", "attempt"]
FULL_UNIQUE = "uq_gates_checkpoint_id_dataset_version_id_attempt"
REAL_UNIQUE = "uq_gates_real_attempt"
OVERRIDE_MESSAGE = "policy overridden in the request"

gates = sa.table(
    "gates",
    sa.column("id", sa.Integer()),
    sa.column("notes", JSON_TYPE),
    sa.column("exploratory", sa.Boolean()),
)


def overrode_policy(notes: Mapping[str, Any] | None) -> bool:
    """Whether a stored gate's request changed the model's stored policy."""
    notes = notes or {}
    overrides = notes.get("policy_overrides")
    if overrides is None:
        messages = notes.get("messages") or []
        return any(message.startswith(OVERRIDE_MESSAGE) for message in messages)
    return bool(overrides)


def upgrade() -> None:
    with op.batch_alter_table("gates", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("exploratory", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.drop_constraint(FULL_UNIQUE, type_="unique")
    bind = op.get_bind()
    explored = [
        gate_id
        for gate_id, notes in bind.execute(sa.select(gates.c.id, gates.c.notes))
        if overrode_policy(notes)
    ]
    if explored:
        bind.execute(gates.update().where(gates.c.id.in_(explored)).values(exploratory=True))
    # Outside the batch: SQLite's table copy would not carry the WHERE clause over.
    op.create_index(
        REAL_UNIQUE,
        "gates",
        ATTEMPT_KEY,
        unique=True,
        sqlite_where=REAL_GATES,
        postgresql_where=REAL_GATES,
    )


def downgrade() -> None:
    op.drop_index(REAL_UNIQUE, table_name="gates")
    op.execute(
        "UPDATE gates SET attempt = (SELECT COUNT(*) FROM gates g WHERE "
        "g.checkpoint_id = gates.checkpoint_id AND g.dataset_version_id = "
        "gates.dataset_version_id AND g.id <= gates.id)"
    )
    with op.batch_alter_table("gates", schema=None) as batch_op:
        batch_op.drop_column("exploratory")
        batch_op.create_unique_constraint(FULL_UNIQUE, ATTEMPT_KEY)
