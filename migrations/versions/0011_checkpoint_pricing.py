"""checkpoint pricing: what serving a checkpoint costs, for the drift job's cost signals

Two nullable columns on `checkpoints`, in USD per million input and output tokens. They are
set (both together) or cleared through `PUT`/`DELETE /api/v1/checkpoints/{id}/pricing`,
apart from the registration body, whose hash stays what it was: prices change, the artifact
a version names does not. Existing checkpoints are unpriced (NULL), so they have no cost
signals until priced. SQLite and PostgreSQL both add a nullable column without a default in
place, without rewriting a row; the CHECK that both prices are set or neither makes SQLite
copy the table once (batch mode), PostgreSQL validates it over the existing rows.

Downgrade drops both columns (the prices are lost; nothing else depends on them).

Revision ID: 0011
Revises: 0010
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PRICE_COLUMNS = ("usd_per_million_input_tokens", "usd_per_million_output_tokens")


# Both prices or neither: the drift job's cost needs the pair.
PRICING_PAIR = "(usd_per_million_input_tokens IS NULL) = (usd_per_million_output_tokens IS NULL)"


def upgrade() -> None:
    with op.batch_alter_table("checkpoints", schema=None) as batch_op:
        for name in PRICE_COLUMNS:
            batch_op.add_column(sa.Column(name, sa.Double(), nullable=True))
        batch_op.create_check_constraint(op.f("ck_checkpoints_pricing_pair"), PRICING_PAIR)


def downgrade() -> None:
    with op.batch_alter_table("checkpoints", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_checkpoints_pricing_pair"), type_="check")
        for name in reversed(PRICE_COLUMNS):
            batch_op.drop_column(name)
