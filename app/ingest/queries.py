"""Typed reads of stored events and traces, shared by the API and the pages.

The only reads of raw events outside the daily rollup."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import (
    Checkpoint,
    Event,
    Feedback,
    Model,
)


@dataclass(frozen=True)
class EventFilter:
    model: str | None = None
    checkpoint_id: int | None = None
    route: str | None = None
    user_segment: str | None = None
    prompt_version: str | None = None
    flag: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    trace_ids: tuple[str, ...] = ()


EVENT_FLAGS = {
    "eval_failed": Event.eval_passed.is_(False),
    "fallback": Event.fallback.is_(True),
    "refusal": Event.refusal.is_(True),
    "thumbs_down": Event.feedback == -1,
}


def events(
    session: Session, project_id: int, filters: EventFilter, before_id: int | None, limit: int
) -> tuple[list[tuple[Event, str, str]], int | None]:
    """Newest first, keyset-paged by id; returns (event, model, version) rows and the next id."""
    stmt = (
        select(Event, Model.name, Checkpoint.version)
        .join(Model, Model.id == Event.model_id)
        .join(Checkpoint, Checkpoint.id == Event.checkpoint_id)
        .where(Event.project_id == project_id)
        .order_by(Event.id.desc())
        .limit(limit + 1)
    )
    if filters.model:
        stmt = stmt.where(Model.name == filters.model)
    if filters.checkpoint_id:
        stmt = stmt.where(Event.checkpoint_id == filters.checkpoint_id)
    for column, wanted in (
        (Event.route, filters.route),
        (Event.user_segment, filters.user_segment),
        (Event.prompt_version, filters.prompt_version),
    ):
        if wanted:
            stmt = stmt.where(column == wanted)
    if filters.start is not None:
        stmt = stmt.where(Event.ts >= filters.start)
    if filters.end is not None:
        stmt = stmt.where(Event.ts <= filters.end)
    if before_id is not None:
        stmt = stmt.where(Event.id < before_id)
    if filters.trace_ids:
        stmt = stmt.where(Event.trace_id.in_(filters.trace_ids))
    if filters.flag in EVENT_FLAGS:
        stmt = stmt.where(EVENT_FLAGS[filters.flag])
    rows = [(event, model, version) for event, model, version in session.execute(stmt)]
    next_id = rows[limit - 1][0].id if len(rows) > limit else None
    return rows[:limit], next_id


def trace_events(
    session: Session, project_id: int, trace_id: str
) -> tuple[list[tuple[Event, str, str]], Feedback | None]:
    rows, _ = events(session, project_id, EventFilter(trace_ids=(trace_id,)), None, 500)
    feedback = session.scalar(
        select(Feedback).where(Feedback.project_id == project_id, Feedback.trace_id == trace_id)
    )
    return sorted(rows, key=lambda row: row[0].ts), feedback
