"""Production traffic: one row per model call, and user feedback keyed by trace."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Index,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.models.base import Base, BigIntPK, CreatedAt, JSONType, TenantKeyed, postgresql_primary_key
from app.models.registry import Checkpoint


class Event(TenantKeyed, Base):
    """One model call. On PostgreSQL the table is partitioned by UTC day on `ts` (one
    partition per day, `events_YYYYMMDD`; app/ingest/partitions.py): retention drops whole
    days. A unique key of a partitioned table must contain `ts`, which would let a retry with
    another timestamp store a second row, so exactly-once lives in `event_keys` instead; on
    SQLite (one table) the same key table serves, so both databases follow one rule."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    checkpoint_id: Mapped[int] = mapped_column(ForeignKey("checkpoints.id", ondelete="CASCADE"))
    trace_id: Mapped[str] = mapped_column(String(64))
    # Empty string, not NULL, when absent: NULLs never collide in a unique index.
    span_id: Mapped[str] = mapped_column(String(32), default="")
    ts: Mapped[datetime]
    # The three common cohort dimensions are columns so drift can GROUP BY them cheaply;
    # `cohort` keeps every dimension, these included.
    route: Mapped[str | None] = mapped_column(String(200))
    prompt_version: Mapped[str | None] = mapped_column(String(100))
    user_segment: Mapped[str | None] = mapped_column(String(100))
    cohort: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # The row of `event_cohorts` holding this exact `cohort`, filled by ingest: the drift scan
    # groups by this integer instead of hashing and comparing the JSON of every event. NULL
    # for rows stored before it existed (drift groups those by `cohort` itself). No foreign
    # key: one would be checked for every ingested event, and cohorts are never deleted
    # apart from their project, which takes its events along.
    cohort_id: Mapped[int | None] = mapped_column(BigInteger)
    input: Mapped[str | None] = mapped_column(Text)
    output: Mapped[str | None] = mapped_column(Text)
    truncated: Mapped[bool] = mapped_column(default=False)
    eval_passed: Mapped[bool | None]
    fallback: Mapped[bool | None]
    refusal: Mapped[bool | None]
    should_refuse: Mapped[bool | None]
    # +1 thumbs up, -1 thumbs down: the trace's rating, copied onto each call that took it.
    feedback: Mapped[int | None] = mapped_column(SmallInteger)
    # The same rating on the trace's carrier for this checkpoint only, NULL on every other
    # event: the latest (ts, then id) served call of the trace on this checkpoint carrying
    # `feedback`, the answer the user rated after. The daily drift scan counts
    # thumbs_down_rate on it, so a rated trace is one rating per checkpoint however many calls
    # it made, and the scan stays a plain aggregate. Kept by ingest and record_feedback
    # (app/ingest/service._place_carriers).
    carried_feedback: Mapped[int | None] = mapped_column(SmallInteger)
    latency_ms: Mapped[float | None]
    # Token counts of the call (REST fields; OTLP gen_ai.usage.* / llm.token_count.*).
    input_tokens: Mapped[int | None]
    output_tokens: Mapped[int | None]
    probability: Mapped[float | None]
    label: Mapped[str | None] = mapped_column(String(200))
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    source: Mapped[str] = mapped_column(String(8), default="rest")
    received_at: Mapped[datetime]
    # A shadow answer: the trace id of the served request this event answered off the
    # serving path. Never served traffic (drift leaves it out); canaries pair it with the
    # served event of that trace.
    shadow_of: Mapped[str | None] = mapped_column(String(64))

    checkpoint: Mapped[Checkpoint] = relationship(lazy="selectin")

    __table_args__ = (
        # A trace's events: the trace view, feedback written after its events, promotion of
        # traces into a dataset. Not unique (see the class docstring): event_keys is.
        Index("ix_events_project_trace", "project_id", "trace_id"),
        Index("ix_events_checkpoint_ts", "checkpoint_id", "ts"),
        Index("ix_events_project_ts", "project_id", "ts"),
        # Whether a day holds events stored before cohorts were interned (the drift scan then
        # groups those by their JSON): partial, so no interned event ever enters it.
        Index(
            "ix_events_project_ts_without_cohort",
            "project_id",
            "ts",
            sqlite_where=text("cohort_id IS NULL"),
            postgresql_where=text("cohort_id IS NULL"),
        ),
        # Newest-first listings (API and trace explorer) page by id within a project.
        Index("ix_events_project_id", "project_id", "id"),
        # Shadow answers of a served trace; partial, so served traffic (nearly every row)
        # costs the index nothing on ingest.
        Index(
            "ix_events_project_shadow_of",
            "project_id",
            "shadow_of",
            sqlite_where=text("shadow_of IS NOT NULL"),
            postgresql_where=text("shadow_of IS NOT NULL"),
        ),
        postgresql_primary_key("project_id", "id", "ts"),
    )


class EventCohort(TenantKeyed, Base):
    """One distinct cohort (the whole JSON of dimension values) a project's events carry,
    interned by ingest (app/ingest/cohorts.py). `digest` is the SHA-256 of the cohort's
    canonical JSON (keys sorted), so two events whose cohorts are equal share a row whatever
    their key order; `route`, `prompt_version` and `user_segment` repeat what the cohort says,
    as the events' own columns do. Rows are never updated: an id names one cohort for good."""

    __tablename__ = "event_cohorts"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    digest: Mapped[str] = mapped_column(String(64))
    cohort: Mapped[dict[str, Any]]
    route: Mapped[str | None] = mapped_column(String(200))
    prompt_version: Mapped[str | None] = mapped_column(String(100))
    user_segment: Mapped[str | None] = mapped_column(String(100))

    __table_args__ = (
        UniqueConstraint("project_id", "digest"),
        postgresql_primary_key("project_id", "id"),
    )


class EventKey(Base):
    """The exactly-once claim of an event: ingest inserts the key first (ON CONFLICT DO
    NOTHING RETURNING) and stores only the events whose key it claimed, in one transaction.
    A concurrent writer of the same key waits on the unique index until the first commits
    (then skips) or rolls back (then claims it), so a key is stored once whatever the
    timestamps of the copies. Retention deletes a key together with its event."""

    __tablename__ = "event_keys"

    project_id: Mapped[int] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    trace_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    span_id: Mapped[str] = mapped_column(String(32), primary_key=True)


class Feedback(TenantKeyed, CreatedAt, Base):
    """Kept on its own so feedback that arrives before its event is not lost. `created_at` is
    when the trace was last rated (every POST /feedback sets it): ingest tells the calls
    made after the rating by the calls stored before it (service._rated_until)."""

    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    trace_id: Mapped[str] = mapped_column(String(64))
    value: Mapped[int] = mapped_column(SmallInteger)
    comment: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        UniqueConstraint("project_id", "trace_id"),
        postgresql_primary_key("project_id", "id"),
    )
