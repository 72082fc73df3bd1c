"""Stored gate decisions: a candidate run compared with a baseline run under a policy."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, Index
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.models.base import Base, CreatedAt, JSONType, str_enum
from app.models.registry import Checkpoint, Model


class GateVerdict(StrEnum):
    passed = "pass"
    block = "block"
    inconclusive = "inconclusive"


class Gate(CreatedAt, Base):
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
    policy: Mapped[dict[str, Any]]
    policy_version: Mapped[int | None]
    verdict: Mapped[GateVerdict] = mapped_column(str_enum(GateVerdict, "gate_verdict"))
    reasons: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)
    comparisons: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)
    notes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    api_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id", ondelete="SET NULL"))

    model: Mapped[Model] = relationship(lazy="selectin")
    checkpoint: Mapped[Checkpoint] = relationship(lazy="selectin")

    __table_args__ = (
        Index("ix_gates_checkpoint", "checkpoint_id", "id"),
        Index("ix_gates_project", "project_id", "id"),
    )
