"""Evaluation runs: a checkpoint's outputs on a dataset version, scored per row x evaluator."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.models.base import (
    Base,
    BigIntPK,
    CreatedAt,
    JSONType,
    TenantKeyed,
    postgresql_primary_key,
    str_enum,
)
from app.models.datasets import DatasetVersion

# The longest `Idempotency-Key` a run keeps (Stripe's limit; a UUID needs 36).
IDEMPOTENCY_KEY_LENGTH = 255
# A keyed run keeps the digest of the request that created it, an unkeyed run neither.
IDEMPOTENCY_PAIR = "(idempotency_key IS NULL) = (request_digest IS NULL)"


class RunStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"


class EvaluationRun(CreatedAt, Base):
    """Also the work item: a worker claims a queued row and keeps its heartbeat fresh."""

    __tablename__ = "evaluation_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    checkpoint_id: Mapped[int] = mapped_column(ForeignKey("checkpoints.id", ondelete="CASCADE"))
    dataset_version_id: Mapped[int] = mapped_column(
        ForeignKey("dataset_versions.id", ondelete="CASCADE")
    )
    suite_name: Mapped[str | None] = mapped_column(String(200))
    evaluators: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)
    status: Mapped[RunStatus] = mapped_column(
        str_enum(RunStatus, "run_status"), default=RunStatus.queued
    )
    output_source: Mapped[str] = mapped_column(String(16))
    # Calls per row: each row's output is produced (or uploaded) and scored this many times.
    repeats: Mapped[int] = mapped_column(default=1, server_default=text("1"))
    progress_done: Mapped[int] = mapped_column(default=0)
    progress_total: Mapped[int] = mapped_column(default=0)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(default=0)
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    heartbeat_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    api_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id", ondelete="SET NULL"))
    # The client's `Idempotency-Key` for the request that created the run (unique per project,
    # so a retried request finds this run instead of making a second one) and the sha256 of
    # that request's canonical form (to tell a retry from another request under the same key).
    idempotency_key: Mapped[str | None] = mapped_column(String(IDEMPOTENCY_KEY_LENGTH))
    request_digest: Mapped[str | None] = mapped_column(String(64))

    dataset_version: Mapped[DatasetVersion] = relationship(lazy="selectin")

    __table_args__ = (
        Index("ix_evaluation_runs_status", "status", "id"),
        Index("ix_evaluation_runs_checkpoint", "checkpoint_id", "dataset_version_id"),
        Index("ix_evaluation_runs_project", "project_id", "id"),
        UniqueConstraint("project_id", "idempotency_key"),
        CheckConstraint(IDEMPOTENCY_PAIR, name="idempotency_pair"),
    )


class RunOutput(TenantKeyed, Base):
    """One call's output: (run, key, repeat) is unique; repeat counts 0..run.repeats-1.
    `project_id` repeats its run's: the table is distributed by it (migration 0009)."""

    __tablename__ = "run_outputs"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    run_id: Mapped[int] = mapped_column(ForeignKey("evaluation_runs.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(200))
    repeat: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    output: Mapped[Any | None] = mapped_column(JSONType)
    trajectory: Mapped[Any | None] = mapped_column(JSONType)
    probability: Mapped[float | None]
    latency_ms: Mapped[float | None]
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        UniqueConstraint("project_id", "run_id", "key", "repeat"),
        postgresql_primary_key("project_id", "id"),
    )


class EvalResult(TenantKeyed, Base):
    """One evaluator's verdict on one call (the output of `repeat`) of one row, or with
    `error` its failure to reach one (score 0, not passed, details["error"] says why; the
    summary counts it apart and the gate leaves it out). `project_id` repeats its run's: the
    table is distributed by it (migration 0009)."""

    __tablename__ = "eval_results"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    run_id: Mapped[int] = mapped_column(ForeignKey("evaluation_runs.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(200))
    evaluator: Mapped[str] = mapped_column(String(100))
    repeat: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    score: Mapped[float]
    passed: Mapped[bool]
    reason: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    error: Mapped[bool] = mapped_column(default=False, server_default=false())

    __table_args__ = (
        UniqueConstraint("project_id", "run_id", "key", "evaluator", "repeat"),
        postgresql_primary_key("project_id", "id"),
    )
