"""Stored gate decisions: a candidate run compared with a baseline run under a policy."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, Index, false, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.models.base import Base, CreatedAt, JSONType, str_enum
from app.models.datasets import DatasetVersion
from app.models.registry import Checkpoint, Model


class GateVerdict(StrEnum):
    passed = "pass"
    block = "block"
    inconclusive = "inconclusive"


# The rows whose attempt numbers must not repeat: a gate decided under the stored policy.
REAL_GATES = text("NOT exploratory")


class Gate(CreatedAt, Base):
    """One decision. Real gates of a checkpoint on a dataset version (the candidate run's)
    are numbered `attempt` 1, 2, ... (unique among real gates): attempt L spends
    alpha / 2^(L-1), pools every succeeded run of the checkpoint on the version
    (`candidate_run_ids`; the baseline's checkpoint likewise, `baseline_run_ids`), and after
    a block (`previously_blocked`) only a pass lifts it (docs/statistics.md §7.3).

    An `exploratory` gate (its request overrode the model's stored policy) never promotes,
    so it spends no attempt: it carries the attempt and alpha of the next real gate, which
    any number of exploratory gates may share."""

    __tablename__ = "gates"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    checkpoint_id: Mapped[int] = mapped_column(ForeignKey("checkpoints.id", ondelete="CASCADE"))
    candidate_run_id: Mapped[int] = mapped_column(
        ForeignKey("evaluation_runs.id", ondelete="CASCADE")
    )
    baseline_run_id: Mapped[int] = mapped_column(
        ForeignKey("evaluation_runs.id", ondelete="CASCADE")
    )
    dataset_version_id: Mapped[int] = mapped_column(
        ForeignKey("dataset_versions.id", ondelete="CASCADE")
    )
    attempt: Mapped[int] = mapped_column(default=1, server_default=text("1"))
    previously_blocked: Mapped[bool] = mapped_column(default=False, server_default=false())
    exploratory: Mapped[bool] = mapped_column(default=False, server_default=false())
    # The error budget of this attempt (spent by a real gate, only shown by an exploratory
    # one); None for gates decided before budgets were stored.
    alpha: Mapped[float | None]
    candidate_run_ids: Mapped[list[int]] = mapped_column(
        JSONType, default=list, server_default=text("'[]'")
    )
    baseline_run_ids: Mapped[list[int]] = mapped_column(
        JSONType, default=list, server_default=text("'[]'")
    )
    policy: Mapped[dict[str, Any]]
    policy_version: Mapped[int | None]
    verdict: Mapped[GateVerdict] = mapped_column(str_enum(GateVerdict, "gate_verdict"))
    reasons: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)
    comparisons: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)
    notes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    api_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id", ondelete="SET NULL"))

    model: Mapped[Model] = relationship(lazy="selectin")
    checkpoint: Mapped[Checkpoint] = relationship(lazy="selectin")
    dataset_version: Mapped[DatasetVersion] = relationship(lazy="selectin")

    __table_args__ = (
        Index(
            "uq_gates_real_attempt",
            "checkpoint_id",
            "dataset_version_id",
            "attempt",
            unique=True,
            sqlite_where=REAL_GATES,
            postgresql_where=REAL_GATES,
        ),
        Index("ix_gates_checkpoint", "checkpoint_id", "id"),
        Index("ix_gates_project", "project_id", "id"),
    )
