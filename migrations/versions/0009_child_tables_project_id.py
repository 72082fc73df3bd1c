"""dataset_rows, run_outputs, eval_results carry project_id and are keyed by it

The three child tables (rows of a dataset version; outputs and verdicts of an evaluation run)
gain `project_id`, filled from their parent (`dataset_versions`, `evaluation_runs`), then
NOT NULL with a cascading foreign key to `projects`, like the other tenant tables. Their
unique keys lead with it (on SQLite too) and, on PostgreSQL, their primary keys become
`(project_id, id)`, so they can be distributed by `project_id` (Citus) like the other
per-project tables; docs/scale-out.md. Their foreign keys to the parent (a reference table)
stay as they are.

Downgrade restores the old keys and drops the column.

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# table -> (parent table, column pointing at it, unique key's other columns, old unique name)
CHILD_TABLES = {
    "dataset_rows": (
        "dataset_versions",
        "version_id",
        ["version_id", "key"],
        "uq_dataset_rows_version_id_key",
    ),
    "run_outputs": (
        "evaluation_runs",
        "run_id",
        ["run_id", "key", "repeat"],
        "uq_run_outputs_run_id_key_repeat",
    ),
    "eval_results": (
        "evaluation_runs",
        "run_id",
        ["run_id", "key", "evaluator", "repeat"],
        "uq_eval_results_run_id_key_evaluator_repeat",
    ),
}


def _is_postgres() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def _new_unique(table: str, columns: list[str]) -> str:
    """The name the models' naming convention gives the key with project_id in front."""
    return f"uq_{table}_project_id_{'_'.join(columns)}"


def _backfill(table: str, parent: str, parent_column: str) -> str:
    """Every row takes its parent's project: one join on PostgreSQL (a correlated subquery
    would look the parent up once per row), a correlated subquery on SQLite (UPDATE ... FROM
    needs SQLite 3.33)."""
    if _is_postgres():
        return (
            f"UPDATE {table} SET project_id = {parent}.project_id FROM {parent} "
            f"WHERE {parent}.id = {table}.{parent_column}"
        )
    return (
        f"UPDATE {table} SET project_id = (SELECT {parent}.project_id FROM {parent} "
        f"WHERE {parent}.id = {table}.{parent_column})"
    )


def upgrade() -> None:
    postgres = _is_postgres()
    for table, (parent, parent_column, columns, old_unique) in CHILD_TABLES.items():
        op.add_column(table, sa.Column("project_id", sa.Integer(), nullable=True))
        op.execute(_backfill(table, parent, parent_column))
        with op.batch_alter_table(table) as batch_op:
            batch_op.alter_column("project_id", existing_type=sa.Integer(), nullable=False)
            batch_op.create_foreign_key(
                f"fk_{table}_project_id_projects",
                "projects",
                ["project_id"],
                ["id"],
                ondelete="CASCADE",
            )
            batch_op.drop_constraint(old_unique, type_="unique")
            batch_op.create_unique_constraint(_new_unique(table, columns), ["project_id", *columns])
        if postgres:
            op.execute(f"ALTER TABLE {table} DROP CONSTRAINT pk_{table}")
            op.execute(
                f"ALTER TABLE {table} ADD CONSTRAINT pk_{table} PRIMARY KEY (project_id, id)"
            )


def downgrade() -> None:
    postgres = _is_postgres()
    for table, (_parent, _parent_column, columns, old_unique) in CHILD_TABLES.items():
        if postgres:
            op.execute(f"ALTER TABLE {table} DROP CONSTRAINT pk_{table}")
            op.execute(f"ALTER TABLE {table} ADD CONSTRAINT pk_{table} PRIMARY KEY (id)")
        with op.batch_alter_table(table) as batch_op:
            batch_op.drop_constraint(_new_unique(table, columns), type_="unique")
            batch_op.create_unique_constraint(old_unique, columns)
            batch_op.drop_constraint(f"fk_{table}_project_id_projects", type_="foreignkey")
            batch_op.drop_column("project_id")
