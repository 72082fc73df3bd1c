"""Golden datasets: immutable versions of keyed rows, and saved evaluator suites."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint, func, select, text
from sqlalchemy.orm import Mapped, column_property, mapped_column, relationship

from app.models.base import (
    Base,
    BigIntPK,
    CreatedAt,
    JSONType,
    TenantKeyed,
    postgresql_primary_key,
    str_enum,
    utcnow,
)


class Risk(StrEnum):
    high = "high"
    medium = "medium"
    low = "low"


class ExpectedBehavior(StrEnum):
    answer = "answer"
    refuse = "refuse"


class Dataset(CreatedAt, Base):
    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (UniqueConstraint("project_id", "name"),)


class DatasetVersion(CreatedAt, Base):
    __tablename__ = "dataset_versions"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    version: Mapped[int]
    content_hash: Mapped[str] = mapped_column(String(64))
    row_count: Mapped[int]
    source: Mapped[str] = mapped_column(String(16))
    note: Mapped[str | None] = mapped_column(Text)
    # Declared risk of cohorts, {dimension: {value: level}}: what the gate guards besides the
    # whole population and the risk=<level> cohorts. Part of the version's content hash.
    cohort_risk: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default=text("'{}'"))

    dataset: Mapped[Dataset] = relationship(lazy="selectin")

    __table_args__ = (UniqueConstraint("dataset_id", "version"),)


class DatasetRow(TenantKeyed, Base):
    """Distributed by project_id like the other per-project tables that grow (migration
    0009); `project_id` repeats its version's, so every read and write names the project
    and never needs the version to route. The foreign key to `dataset_versions` (a reference
    table on Citus) stays by `id`."""

    __tablename__ = "dataset_rows"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    version_id: Mapped[int] = mapped_column(ForeignKey("dataset_versions.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(200))
    input: Mapped[Any] = mapped_column(JSONType)
    expected: Mapped[Any | None] = mapped_column(JSONType)
    context: Mapped[Any | None] = mapped_column(JSONType)
    cohort: Mapped[dict[str, Any]] = mapped_column(default=dict)
    risk: Mapped[Risk] = mapped_column(str_enum(Risk, "risk"), default=Risk.medium)
    expected_behavior: Mapped[ExpectedBehavior | None] = mapped_column(
        str_enum(ExpectedBehavior, "expected_behavior")
    )
    label: Mapped[str | None] = mapped_column(String(200))
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSONType, default=dict)
    row_hash: Mapped[str] = mapped_column(String(64))

    __table_args__ = (
        UniqueConstraint("project_id", "version_id", "key"),
        postgresql_primary_key("project_id", "id"),
    )


# The newest version number of each dataset, read in the same SELECT as the dataset.
Dataset.latest_version = column_property(
    select(func.max(DatasetVersion.version))
    .where(DatasetVersion.project_id == Dataset.project_id, DatasetVersion.dataset_id == Dataset.id)
    .correlate_except(DatasetVersion)
    .scalar_subquery()
)


class EvaluationSuite(TenantKeyed, CreatedAt, Base):
    __tablename__ = "evaluation_suites"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    evaluators: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    __table_args__ = (
        UniqueConstraint("project_id", "name"),
        postgresql_primary_key("project_id", "id"),
    )
