"""Daily signal rollups, the monitors that band them, and the alerts they open."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
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
    utcnow,
)
from app.models.registry import ChampionHistory, Checkpoint, Model


class AlertStatus(StrEnum):
    open = "open"
    acknowledged = "acknowledged"
    resolved = "resolved"


DATA_CORRECTED = "data_corrected"
"""The resolution of an alert none of whose days fires once late data is in: the regression it
reported was never there (app.drift.alerts; it reopens if a later rerun fires again)."""


class DailySignal(TenantKeyed, Base):
    __tablename__ = "daily_signals"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    checkpoint_id: Mapped[int] = mapped_column(ForeignKey("checkpoints.id", ondelete="CASCADE"))
    day: Mapped[date]
    signal: Mapped[str] = mapped_column(String(32))
    dimension: Mapped[str] = mapped_column(String(100))
    value: Mapped[str] = mapped_column(String(200))
    numerator: Mapped[float]
    denominator: Mapped[int]
    rate: Mapped[float | None]
    extra: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    computed_at: Mapped[datetime] = mapped_column(default=utcnow)

    checkpoint: Mapped[Checkpoint] = relationship(lazy="selectin")

    __table_args__ = (
        UniqueConstraint(
            "project_id",
            "checkpoint_id",
            "day",
            "signal",
            "dimension",
            "value",
            name="uq_daily_signals_project_checkpoint_day_signal",
        ),
        Index("ix_daily_signals_model_signal_day", "model_id", "signal", "day"),
        Index("ix_daily_signals_project_day", "project_id", "day"),
        postgresql_primary_key("project_id", "id"),
    )


class DriftRun(TenantKeyed, Base):
    __tablename__ = "drift_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    day: Mapped[date]
    trigger: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    signals: Mapped[int] = mapped_column(default=0)
    alerts_opened: Mapped[int] = mapped_column(default=0)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_drift_runs_project", "project_id", "id"),
        postgresql_primary_key("project_id", "id"),
    )


class Monitor(CreatedAt, Base):
    __tablename__ = "monitors"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    signal: Mapped[str] = mapped_column(String(32))
    # NULL dimension: every dimension; a value narrows it to one cohort (an override).
    dimension: Mapped[str | None] = mapped_column(String(100))
    value: Mapped[str | None] = mapped_column(String(200))
    band: Mapped[dict[str, Any]]
    min_volume: Mapped[int] = mapped_column(default=100)
    cooldown_hours: Mapped[int] = mapped_column(default=24)
    resolve_after_days: Mapped[int] = mapped_column(default=2)
    enabled: Mapped[bool] = mapped_column(default=True)
    is_default: Mapped[bool] = mapped_column(default=False)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    model: Mapped[Model] = relationship(lazy="selectin")

    __table_args__ = (
        Index("ix_monitors_model_signal", "model_id", "signal"),
        # One monitor per (model, signal, cohort); NULLs never collide in a unique index, so
        # "any" is compared as '' (never a valid dimension or value). Migration 0002.
        Index(
            "uq_monitors_model_signal_cohort",
            "model_id",
            "signal",
            text("coalesce(dimension, '')"),
            text("coalesce(value, '')"),
            unique=True,
        ),
    )


class Alert(Base):
    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    monitor_id: Mapped[int] = mapped_column(ForeignKey("monitors.id", ondelete="CASCADE"))
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    checkpoint_id: Mapped[int] = mapped_column(ForeignKey("checkpoints.id", ondelete="CASCADE"))
    signal: Mapped[str] = mapped_column(String(32))
    dimension: Mapped[str] = mapped_column(String(100))
    value: Mapped[str] = mapped_column(String(200))
    day: Mapped[date]
    last_day: Mapped[date]
    status: Mapped[AlertStatus] = mapped_column(
        str_enum(AlertStatus, "alert_status"), default=AlertStatus.open
    )
    observed: Mapped[float]
    band_low: Mapped[float | None]
    band_high: Mapped[float | None]
    baseline: Mapped[float | None]
    volume: Mapped[int]
    sample_trace_ids: Mapped[list[str]] = mapped_column(JSONType)
    rollback_target_id: Mapped[int | None] = mapped_column(
        ForeignKey("checkpoints.id", ondelete="SET NULL")
    )
    days_in_band: Mapped[int] = mapped_column(default=0)
    opened_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_notified_at: Mapped[datetime | None]
    acknowledged_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    resolution: Mapped[str | None] = mapped_column(String(32))
    annotations: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)
    # Why it is open: which rule fired, the band, the CUSUM statistic and threshold, and the
    # frozen reference it was judged against (app/drift/judge.py). NULL on alerts opened
    # before migration 0007.
    evidence: Mapped[dict[str, Any] | None] = mapped_column(JSONType)

    model: Mapped[Model] = relationship(lazy="selectin")
    checkpoint: Mapped[Checkpoint] = relationship(foreign_keys=[checkpoint_id], lazy="selectin")
    rollback_target: Mapped[Checkpoint | None] = relationship(
        foreign_keys=[rollback_target_id], lazy="selectin"
    )
    # The registry's record of rollbacks made for this alert (champion_history.alert_id).
    rollbacks: Mapped[list[ChampionHistory]] = relationship(
        primaryjoin="and_(ChampionHistory.project_id == Alert.project_id, "
        "ChampionHistory.alert_id == Alert.id)",
        order_by="ChampionHistory.id",
        viewonly=True,
        lazy="selectin",
    )

    __table_args__ = (
        # One unresolved alert per (monitor, cohort, signal).
        Index(
            "uq_alerts_unresolved",
            "monitor_id",
            "signal",
            "dimension",
            "value",
            unique=True,
            sqlite_where=text("status != 'resolved'"),
            postgresql_where=text("status != 'resolved'"),
        ),
        Index("ix_alerts_project_status", "project_id", "status", "id"),
    )


class IncidentDay(TenantKeyed, CreatedAt, Base):
    """Days excluded from baseline windows (a known incident is not a normal day)."""

    __tablename__ = "incident_days"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    day: Mapped[date]
    note: Mapped[str | None] = mapped_column(Text)

    model: Mapped[Model] = relationship(lazy="selectin")

    __table_args__ = (
        UniqueConstraint(
            "project_id", "model_id", "day", name="uq_incident_days_project_model_day"
        ),
        postgresql_primary_key("project_id", "id"),
    )


class DriftReference(Base):
    """A model's frozen reference: the known-good days of one checkpoint and, per cohort x
    signal, the random-effects summary of them (app/stats/reference.py).

    Versions count up per model; exactly one is ``active`` once any exists (the one the
    daily job judges against). An entry never changes after it is written: a champion
    change or a rebaseline writes a new version and marks the old one ``superseded``. The
    one thing added later is entries for a cohort the reference held none for, each from
    its own known-good days (``cohorts_added``, app/drift/references.add_new_cohorts).
    ``stats`` maps "signal|dimension|value" to [centre, between-day variance, variance of
    the centre, days used, days excluded], and a cost entry then to the [input, output]
    prices its days were computed at (app/drift/references.priced_entry). No surrogate id:
    the key carries project_id (distribution-ready)."""

    __tablename__ = "drift_references"

    project_id: Mapped[int] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    model_id: Mapped[int] = mapped_column(
        ForeignKey("models.id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    checkpoint_id: Mapped[int] = mapped_column(ForeignKey("checkpoints.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16))
    trigger: Mapped[str] = mapped_column(String(32))
    first_day: Mapped[date]
    last_day: Mapped[date]
    days: Mapped[list[str]] = mapped_column(JSONType)
    stats: Mapped[dict[str, list[float]]] = mapped_column(JSONType)
    reason: Mapped[str | None] = mapped_column(Text)
    actor: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    checkpoint: Mapped[Checkpoint] = relationship(lazy="selectin")
    model: Mapped[Model] = relationship(lazy="selectin")
    cohorts_added: Mapped[list[DriftReferenceCohort]] = relationship(
        lazy="selectin",
        order_by=lambda: [
            DriftReferenceCohort.added_on,
            DriftReferenceCohort.dimension,
            DriftReferenceCohort.value,
        ],
    )

    __table_args__ = (Index("ix_drift_references_project_status", "project_id", "status"),)


class DriftReferenceCohort(Base):
    """A cohort whose entries were added to a frozen reference after it froze: it had none
    (it first served after the freeze, or on too few of the window's days), and once it had
    ``reference_days`` known-good days of its own after its warm-up, those days were
    summarised into entries for its keys and added; no other entry changed and the version
    stayed, so every running CUSUM kept its state (app/drift/references.add_new_cohorts).

    ``added_on`` is the first day judged with the entries: every day of ``days`` is before
    it, and a day before it (a rerun) is judged without them."""

    __tablename__ = "drift_reference_cohorts"

    project_id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(primary_key=True)
    version: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    dimension: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str] = mapped_column(String(200), primary_key=True)
    added_on: Mapped[date]
    first_day: Mapped[date]
    last_day: Mapped[date]
    days: Mapped[list[str]] = mapped_column(JSONType)
    entries: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        ForeignKeyConstraint(
            ["project_id", "model_id", "version"],
            [
                "drift_references.project_id",
                "drift_references.model_id",
                "drift_references.version",
            ],
            ondelete="CASCADE",
        ),
    )


class DriftJudgement(Base):
    """One model-day's verdict on one cohort x signal: the band, the CUSUM state after the
    day, and which rules fired. The CUSUM of the next day starts from the latest earlier row
    judged against the same reference version; rerunning a day rewrites its rows."""

    __tablename__ = "drift_judgements"

    project_id: Mapped[int] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    model_id: Mapped[int] = mapped_column(
        ForeignKey("models.id", ondelete="CASCADE"), primary_key=True
    )
    day: Mapped[date] = mapped_column(primary_key=True)
    signal: Mapped[str] = mapped_column(String(32), primary_key=True)
    dimension: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str] = mapped_column(String(200), primary_key=True)
    checkpoint_id: Mapped[int] = mapped_column(ForeignKey("checkpoints.id", ondelete="CASCADE"))
    reference_version: Mapped[int | None]
    side: Mapped[str] = mapped_column(String(16))
    observed: Mapped[float | None]
    volume: Mapped[int]
    center: Mapped[float | None]
    band_low: Mapped[float | None]
    band_high: Mapped[float | None]
    band_alpha: Mapped[float]
    pvalue: Mapped[float | None]
    score: Mapped[float | None]
    cusum: Mapped[float]
    cusum_lower: Mapped[float]
    cusum_h: Mapped[float | None]
    rules: Mapped[int] = mapped_column(SmallInteger)
