"""evaluation runs: an `Idempotency-Key` makes a retried add_evaluation find its run

Two nullable columns on `evaluation_runs`: `idempotency_key`, the key the client sent with
the request that created the run (unique per project), and `request_digest`, the sha256 of
that request's canonical form, so the same key with another request is refused instead of
answered with a run it did not ask for. Both are set or neither (CHECK). Existing runs were
created without a key: both NULL, and NULL keys never collide (a unique constraint treats
NULLs as distinct on PostgreSQL and SQLite alike). SQLite copies the table once (batch mode,
for the constraints); PostgreSQL adds the columns in place and builds the unique index over
the existing rows.

Downgrade drops the constraints and both columns (the keys are lost: a retry after a
downgrade makes a new run, as before this revision).

Revision ID: 0016
Revises: 0015
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Both or neither: a keyed run keeps the digest of the request that created it.
IDEMPOTENCY_PAIR = "(idempotency_key IS NULL) = (request_digest IS NULL)"


def upgrade() -> None:
    with op.batch_alter_table("evaluation_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("idempotency_key", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("request_digest", sa.String(length=64), nullable=True))
        batch_op.create_unique_constraint(
            op.f("uq_evaluation_runs_project_id_idempotency_key"),
            ["project_id", "idempotency_key"],
        )
        batch_op.create_check_constraint(
            op.f("ck_evaluation_runs_idempotency_pair"), IDEMPOTENCY_PAIR
        )


def downgrade() -> None:
    with op.batch_alter_table("evaluation_runs", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_evaluation_runs_idempotency_pair"), type_="check")
        batch_op.drop_constraint(
            op.f("uq_evaluation_runs_project_id_idempotency_key"), type_="unique"
        )
        batch_op.drop_column("request_digest")
        batch_op.drop_column("idempotency_key")
