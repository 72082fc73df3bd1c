"""Canaries: a candidate checkpoint compared with the champion on live traffic until an
always-valid sequential test decides (app/canaries)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.models.base import (
    Base,
    CreatedAt,
    JSONType,
    TenantKeyed,
    postgresql_primary_key,
    str_enum,
    utcnow,
)
from app.models.registry import Checkpoint, Model


class CanaryStatus(StrEnum):
    running = "running"
    promote = "promote"
    rollback = "rollback"
    stopped = "stopped"


class CanaryDecision(StrEnum):
    promote = "promote"
    rollback = "rollback"


class Canary(TenantKeyed, CreatedAt, Base):
    """One candidate against one champion, from `started_at` on.

    Invariants: at most one running canary per model (a partial unique index, so two
    concurrent requests cannot both start one); `decision` is set exactly when `status` is
    promote or rollback, and only ever by a conditional UPDATE from 'running' (or, for a human
    rollback, from 'promote'), so one process's decision is never overwritten by another's.
    The configuration (signals, cohorts, scope, margins, alpha, comparisons) is frozen at
    creation: the sequential test's error guarantee needs the family of comparisons fixed in
    advance."""

    __tablename__ = "canaries"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    checkpoint_id: Mapped[int] = mapped_column(ForeignKey("checkpoints.id", ondelete="CASCADE"))
    # The champion when the canary started: the baseline of every comparison.
    champion_id: Mapped[int] = mapped_column(ForeignKey("checkpoints.id", ondelete="CASCADE"))
    status: Mapped[CanaryStatus] = mapped_column(
        str_enum(CanaryStatus, "canary_status"), default=CanaryStatus.running
    )
    decision: Mapped[CanaryDecision | None] = mapped_column(
        str_enum(CanaryDecision, "canary_decision")
    )
    signals: Mapped[list[str]] = mapped_column(JSONType)
    cohorts: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)
    # {dimension, value}: the one cohort the candidate serves, when it serves only one; every
    # comparison is then made within it (NULL: the whole population).
    scope: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    comparisons: Mapped[list[str]] = mapped_column(JSONType)
    margin: Mapped[float]
    margins: Mapped[dict[str, Any]] = mapped_column(default=dict)
    alpha: Mapped[float]
    max_days: Mapped[int]
    min_hours: Mapped[int]
    started_at: Mapped[datetime]
    evidence: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    evaluated_at: Mapped[datetime | None]
    # The background loop's claim: a process evaluates the canary only after moving this
    # forward with a conditional UPDATE, so several processes never evaluate it at once.
    next_evaluation_at: Mapped[datetime] = mapped_column(default=utcnow)
    # When and by whom (a key's name, or the sequential test) it left 'running', and why.
    ended_at: Mapped[datetime | None]
    ended_by: Mapped[str | None] = mapped_column(String(100))
    reason: Mapped[str | None] = mapped_column(Text)
    rolled_back_at: Mapped[datetime | None]
    promoted_at: Mapped[datetime | None]
    actor: Mapped[str] = mapped_column(String(100))
    api_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id", ondelete="SET NULL"))

    model: Mapped[Model] = relationship(lazy="selectin")
    checkpoint: Mapped[Checkpoint] = relationship(foreign_keys=[checkpoint_id], lazy="selectin")
    champion: Mapped[Checkpoint] = relationship(foreign_keys=[champion_id], lazy="selectin")

    __table_args__ = (
        Index(
            "uq_canaries_running_model",
            "project_id",
            "model_id",
            unique=True,
            sqlite_where=text("status = 'running'"),
            postgresql_where=text("status = 'running'"),
        ),
        Index("ix_canaries_model", "model_id", "id"),
        Index("ix_canaries_project", "project_id", "id"),
        Index("ix_canaries_due", "status", "next_evaluation_at"),
        postgresql_primary_key("project_id", "id"),
    )
