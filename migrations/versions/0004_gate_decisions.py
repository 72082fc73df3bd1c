"""gate decisions: declared cohort risk, repeats, attempts and pooled runs

Revision ID: 0004
Revises: 0003

- dataset_versions.cohort_risk: declared risk per cohort, {dimension: {value: level}}.
- evaluation_runs.repeats; run_outputs.repeat and eval_results.repeat: a run may call the
  checkpoint k times per row. The unique keys gain the repeat index.
- gates: the dataset version decided on, the attempt number of the checkpoint on that
  version (unique), whether it was blocked there before, the alpha spent and the runs pooled
  on each side. Existing gates are numbered in id order, their version is their candidate
  run's, and their pools are their own two runs; their alpha stays unknown (NULL).

Downgrade keeps repeat 0 of every output and result (the old keys cannot hold more).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("dataset_versions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("cohort_risk", JSON_TYPE, server_default=sa.text("'{}'"), nullable=False)
        )
    with op.batch_alter_table("evaluation_runs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("repeats", sa.Integer(), server_default=sa.text("1"), nullable=False)
        )
    with op.batch_alter_table("run_outputs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("repeat", sa.Integer(), server_default=sa.text("0"), nullable=False)
        )
        batch_op.drop_constraint("uq_run_outputs_run_id_key", type_="unique")
        batch_op.create_unique_constraint(
            "uq_run_outputs_run_id_key_repeat", ["run_id", "key", "repeat"]
        )
    with op.batch_alter_table("eval_results", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("repeat", sa.Integer(), server_default=sa.text("0"), nullable=False)
        )
        batch_op.drop_constraint("uq_eval_results_run_id_key_evaluator", type_="unique")
        batch_op.create_unique_constraint(
            "uq_eval_results_run_id_key_evaluator_repeat", ["run_id", "key", "evaluator", "repeat"]
        )

    with op.batch_alter_table("gates", schema=None) as batch_op:
        batch_op.add_column(sa.Column("dataset_version_id", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column("attempt", sa.Integer(), server_default=sa.text("1"), nullable=False)
        )
        batch_op.add_column(
            sa.Column("previously_blocked", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.add_column(sa.Column("alpha", sa.Double(), nullable=True))
        batch_op.add_column(
            sa.Column(
                "candidate_run_ids", JSON_TYPE, server_default=sa.text("'[]'"), nullable=False
            )
        )
        batch_op.add_column(
            sa.Column("baseline_run_ids", JSON_TYPE, server_default=sa.text("'[]'"), nullable=False)
        )
    op.execute(
        "UPDATE gates SET dataset_version_id = (SELECT r.dataset_version_id "
        "FROM evaluation_runs r WHERE r.id = gates.candidate_run_id)"
    )
    same_place = (
        "g.checkpoint_id = gates.checkpoint_id AND g.dataset_version_id = gates.dataset_version_id"
    )
    op.execute(
        "UPDATE gates SET attempt = (SELECT COUNT(*) FROM gates g WHERE "
        f"{same_place} AND g.id <= gates.id)"
    )
    op.execute(
        "UPDATE gates SET previously_blocked = EXISTS (SELECT 1 FROM gates g WHERE "
        f"{same_place} AND g.id < gates.id AND g.verdict = 'block')"
    )
    array = "jsonb_build_array" if op.get_bind().dialect.name == "postgresql" else "json_array"
    op.execute(
        f"UPDATE gates SET candidate_run_ids = {array}(candidate_run_id), "
        f"baseline_run_ids = {array}(baseline_run_id)"
    )
    with op.batch_alter_table("gates", schema=None) as batch_op:
        batch_op.alter_column("dataset_version_id", existing_type=sa.Integer(), nullable=False)
        batch_op.create_foreign_key(
            "fk_gates_dataset_version_id_dataset_versions",
            "dataset_versions",
            ["dataset_version_id"],
            ["id"],
            ondelete="CASCADE",
        )
        batch_op.create_unique_constraint(
            "uq_gates_checkpoint_id_dataset_version_id_attempt",
            ["checkpoint_id", "dataset_version_id", "attempt"],
        )


def downgrade() -> None:
    with op.batch_alter_table("gates", schema=None) as batch_op:
        batch_op.drop_constraint(
            "uq_gates_checkpoint_id_dataset_version_id_attempt", type_="unique"
        )
        batch_op.drop_constraint("fk_gates_dataset_version_id_dataset_versions", type_="foreignkey")
        batch_op.drop_column("baseline_run_ids")
        batch_op.drop_column("candidate_run_ids")
        batch_op.drop_column("alpha")
        batch_op.drop_column("previously_blocked")
        batch_op.drop_column("attempt")
        batch_op.drop_column("dataset_version_id")
    op.execute("DELETE FROM eval_results WHERE repeat > 0")
    with op.batch_alter_table("eval_results", schema=None) as batch_op:
        batch_op.drop_constraint("uq_eval_results_run_id_key_evaluator_repeat", type_="unique")
        batch_op.create_unique_constraint(
            "uq_eval_results_run_id_key_evaluator", ["run_id", "key", "evaluator"]
        )
        batch_op.drop_column("repeat")
    op.execute("DELETE FROM run_outputs WHERE repeat > 0")
    with op.batch_alter_table("run_outputs", schema=None) as batch_op:
        batch_op.drop_constraint("uq_run_outputs_run_id_key_repeat", type_="unique")
        batch_op.create_unique_constraint("uq_run_outputs_run_id_key", ["run_id", "key"])
        batch_op.drop_column("repeat")
    with op.batch_alter_table("evaluation_runs", schema=None) as batch_op:
        batch_op.drop_column("repeats")
    with op.batch_alter_table("dataset_versions", schema=None) as batch_op:
        batch_op.drop_column("cohort_risk")
