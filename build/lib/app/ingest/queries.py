"""Typed reads of stored events and traces, shared by the API and the pages: the only reads
of raw events outside the daily rollup."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.errors import NotFound
from app.core.pagination import paginate
from app.ingest.schemas import FEEDBACK_SCORES, FeedbackValue
from app.models import (
    Event,
    Feedback,
    Model,
)

TRACE_EVENT_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class EventFilters:
    model: str | None = None
    checkpoint_id: int | None = None
    start: datetime | None = None
    end: datetime | None = None
    route: str | None = None
    user_segment: str | None = None
    prompt_version: str | None = None
    eval_passed: bool | None = None
    fallback: bool | None = None
    refusal: bool | None = None
    feedback: FeedbackValue | None = None
    trace_ids: tuple[str, ...] = ()


# The dashboard's one-word filters, as EventFilters fields.
FLAGS: dict[str, dict[str, Any]] = {
    "eval_failed": {"eval_passed": False},
    "fallback": {"fallback": True},
    "refusal": {"refusal": True},
    "thumbs_down": {"feedback": "down"},
}


def list_events(
    session: Session, project_id: int, filters: EventFilters, cursor: str | None, limit: int
) -> tuple[Sequence[Event], str | None]:
    """Newest first; `start` inclusive, `end` exclusive."""
    stmt = select(Event).where(Event.project_id == project_id)
    if filters.model is not None:
        stmt = stmt.join(Model, Model.id == Event.model_id).where(Model.name == filters.model)
    equal = {
        Event.checkpoint_id: filters.checkpoint_id,
        Event.route: filters.route,
        Event.user_segment: filters.user_segment,
        Event.prompt_version: filters.prompt_version,
        Event.eval_passed: filters.eval_passed,
        Event.fallback: filters.fallback,
        Event.refusal: filters.refusal,
        Event.feedback: FEEDBACK_SCORES[filters.feedback] if filters.feedback else None,
    }
    for column, wanted in equal.items():
        if wanted is not None:
            stmt = stmt.where(column == wanted)
    if filters.start is not None:
        stmt = stmt.where(Event.ts >= filters.start)
    if filters.end is not None:
        stmt = stmt.where(Event.ts < filters.end)
    if filters.trace_ids:
        stmt = stmt.where(Event.trace_id.in_(filters.trace_ids))
    return paginate(session, stmt, Event.id, cursor, limit)


@dataclass(frozen=True, slots=True)
class Trace:
    trace_id: str
    events: Sequence[Event]
    feedback: Feedback | None


def get_trace(session: Session, project_id: int, trace_id: str) -> Trace:
    events = session.scalars(
        select(Event)
        .where(Event.project_id == project_id, Event.trace_id == trace_id)
        .order_by(Event.ts, Event.id)
        .limit(TRACE_EVENT_LIMIT)
    ).all()
    feedback = session.scalar(
        select(Feedback).where(Feedback.project_id == project_id, Feedback.trace_id == trace_id)
    )
    if not events and feedback is None:
        raise NotFound(f"no trace '{trace_id}' in this project")
    return Trace(trace_id, events, feedback)
