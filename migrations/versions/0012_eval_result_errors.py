"""eval results: an evaluator's error is stored as an error, not as a fail

`eval_results.error` (NOT NULL, default false) marks a result whose evaluator could not reach
a verdict (an LLM judge without its key or unreachable after its retries, a crash, an invalid
score). Such a result keeps score 0 and passed false, but the run summary counts it apart and
the gate leaves it out of the comparison like a row that has no result. A row's invalid input
("invalid input: ...") and a missing endpoint output ("no output: ...") stay fails.

Existing results are backfilled: a failed result whose details carry "error" is an error
unless its reason marks one of those two fails; before this revision that is exactly what
the evaluator contract and the worker wrote for an evaluator that could not judge. Adding a
column with a constant default rewrites no row on PostgreSQL (11+) or SQLite; the backfill
updates only the matching results.

Downgrade drops the column (errors become the plain fails they were stored as before).

Revision ID: 0012
Revises: 0011
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _has_error_detail() -> str:
    if op.get_bind().dialect.name == "postgresql":
        return "details ? 'error'"
    return "json_type(details, '$.error') IS NOT NULL"


def upgrade() -> None:
    with op.batch_alter_table("eval_results", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("error", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    op.execute(
        f"UPDATE eval_results SET error = true WHERE NOT passed AND {_has_error_detail()} "
        "AND reason NOT LIKE 'invalid input: %' AND reason NOT LIKE 'no output: %'"
    )


def downgrade() -> None:
    with op.batch_alter_table("eval_results", schema=None) as batch_op:
        batch_op.drop_column("error")
